"""Image -> expression lookup on a small sample with the tiny test-vit encoder."""

from __future__ import annotations

import numpy as np
import pytest
from test_retrieval_helpers import toy_run, toy_sample

import napari_seal.retrieval.spot_lookup as _lookup
from napari_seal.errors import BadInputError, GeneQueryError
from napari_seal.retrieval.spot_lookup import lookup


@pytest.fixture(scope="module")
def encoder():
    from napari_seal.models.factory import create_encoder

    return create_encoder("test-vit")


@pytest.fixture(scope="module")
def sample():
    return toy_sample(n_side=5)


def test_region_parsing():
    assert _lookup.parse_region("10,20").tolist() == [10.0, 20.0]
    assert _lookup.parse_region("0,0;10,0;10,10").shape == (3, 2)
    assert _lookup.parse_region([[3, 4]]).tolist() == [3.0, 4.0]
    for bad in ["a,b", "1,2,3", "1,2;3,4", "nan,1"]:
        with pytest.raises(BadInputError):
            _lookup.parse_region(bad)


def test_point_on_a_reference_spot_returns_that_spot_first(encoder, sample):
    run = toy_run(encoder=encoder)
    other = toy_sample(n_side=4, seed=5, name="other")
    for i in (0, 7, 18):
        x, y = sample.spots_xy[i]
        res = lookup(sample, run, at_xy=(x, y), references=[other, sample], k=4)
        best = res["neighbours"][0]
        assert best["sample"] == "toy"
        assert best["spot_id"] == sample.adata.obs_names[i]
        assert best["similarity"] == pytest.approx(1.0, abs=1e-5)
        assert [n["rank"] for n in res["neighbours"]] == [1, 2, 3, 4]
        sims = [n["similarity"] for n in res["neighbours"]]
        assert sims == sorted(sims, reverse=True)


def test_expression_summary_is_the_mean_over_the_k_spots(encoder, sample):
    run = toy_run(encoder=encoder)
    x, y = sample.spots_xy[3]
    res = lookup(sample, run, at_xy=f"{x},{y}", references=[sample], k=3, n_genes=5)
    ids = [n["spot_id"] for n in res["neighbours"]]
    counts = sample.adata[ids].X.toarray().astype(np.float64)
    all_counts = sample.adata.X.toarray().astype(np.float64)

    def cp10k(c):
        return np.log1p(c / c.sum(axis=1, keepdims=True) * 1e4)

    mean = cp10k(counts).mean(axis=0)
    genes = [str(g) for g in sample.adata.var_names]
    top = res["expression"]["top_genes"]
    assert [t["gene"] for t in top] == [genes[i] for i in np.argsort(-mean)[:5]]
    np.testing.assert_allclose(
        [t["mean"] for t in top], np.sort(mean)[::-1][:5], rtol=1e-6
    )
    diff = mean - cp10k(all_counts).mean(axis=0)
    enr = res["expression"]["enriched_genes"]
    np.testing.assert_allclose(
        [e["difference"] for e in enr], np.sort(diff)[::-1][:5], rtol=1e-6, atol=1e-9
    )
    assert "log1p CP10k" in res["expression"]["unit"]


def test_polygon_and_spaces(encoder, sample):
    run = toy_run(encoder=encoder)
    x, y = sample.spots_xy[12]
    poly = [(x - 80, y - 80), (x + 80, y - 80), (x + 80, y + 80), (x - 80, y + 80)]
    res = lookup(sample, run, at_xy=poly, references=[sample], k=2, space="both")
    assert res["region"]["method"] == "patches"
    assert res["region"]["n_tiles"] >= 1
    assert res["polygon"] is not None
    assert res["at_xy"] is None
    n = res["neighbours"][0]
    assert n["similarity"] == pytest.approx(
        (n["image_similarity"] + n["omics_similarity"]) / 2, abs=1e-6
    )
    res = lookup(sample, run, at_xy=(x, y), references=[sample], k=2, space="omics")
    assert len(res["neighbours"]) == 2
    with pytest.raises(GeneQueryError, match="no omics encoder"):
        lookup(
            sample,
            toy_run(encoder=encoder, omics=False),
            at_xy=(x, y),
            references=[sample],
            space="omics",
        )


def test_lookup_bad_input(encoder, sample):
    run = toy_run(encoder=encoder)
    with pytest.raises(BadInputError, match="at least one reference"):
        lookup(sample, run, at_xy=(10, 10), references=[])
    with pytest.raises(BadInputError, match="k=0"):
        lookup(sample, run, at_xy=(10, 10), references=[sample], k=0)
    with pytest.raises(BadInputError, match="not a lookup space"):
        lookup(sample, run, at_xy=(10, 10), references=[sample], space="text")
    with pytest.raises(BadInputError, match="is not an ST sample"):
        lookup(sample, run, at_xy=(10, 10), references=["/no/such/folder"])
