"""Reference bank, exemplar gene queries and the reliability map (issue 15)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from napari_seal.errors import CheckpointError, GeneQueryError
from napari_seal.evaluate.retrieval_metrics import auroc
from napari_seal.predict.reliability import K_NEIGHBOURS
from napari_seal.retrieval.gene_signatures import GeneQuery


@pytest.fixture(scope="module")
def run(tiny_run):
    from napari_seal.training.runs import load_run

    return load_run(tiny_run)


def _q(gene: str) -> GeneQuery:
    return GeneQuery((gene,), (1.0,), (gene,))


# ------------------------------------------------------------------------- bank
def test_train_writes_the_bank_of_its_training_spots(tiny_run, run):
    from napari_seal.io.hest import bundled_sample_path, load_sample

    assert (tiny_run / "reference.npz").is_file()
    bank = run.bank
    assert bank.genes == tuple(run.panel.genes)
    expr = np.asarray(run.panel.expression(load_sample(bundled_sample_path())))
    expr = expr[expr.sum(axis=1) > 0]
    assert bank.n_spots == len(expr)
    # the same rows (train + held-out eval spots, in another order), fp16-rounded
    got = np.sort(bank.expr.sum(axis=1))
    want = np.sort(expr.sum(axis=1))
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-2)
    assert set(np.unique(bank.sample)) == {0}


def test_bank_roundtrip_and_damage(tmp_path, run):
    from napari_seal.training.reference_bank import BANK, load_bank, write_bank

    write_bank(tmp_path, run.bank)
    back = load_bank(tmp_path, run.panel.genes)
    np.testing.assert_array_equal(back.expr, run.bank.expr.astype(np.float16))
    assert load_bank(tmp_path / "none", run.panel.genes) is None
    with pytest.raises(CheckpointError, match="do not match the run's panel"):
        load_bank(tmp_path, list(run.panel.genes)[::-1])
    (tmp_path / BANK).write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="damaged"):
        load_bank(tmp_path, run.panel.genes)
    # an object array (a pickle) is refused, never unpickled
    np.savez(tmp_path / "p.npz", expr=np.array([object()], dtype=object))
    (tmp_path / "p.npz").replace(tmp_path / BANK)
    with pytest.raises(CheckpointError):
        load_bank(tmp_path, run.panel.genes)


def test_export_run_keeps_the_bank(tmp_path, tiny_run):
    from napari_seal.training.runs import export_run, load_run

    out = export_run(tiny_run, tmp_path / "exported")
    assert load_run(out).bank.n_spots == load_run(tiny_run).bank.n_spots


# -------------------------------------------------------------------- exemplar
def test_exemplar_vector_is_top_quartile_mean_minus_bank_mean(run):
    from napari_seal.retrieval.exemplar import exemplar_embedding, exemplar_spots
    from napari_seal.training.reference_bank import bank_embeddings, bank_zscores

    gene = run.panel.genes[0]
    g = 0
    top = exemplar_spots(run, _q(gene))
    z = bank_zscores(run)[:, g]
    cut = np.quantile(z, 0.75)
    assert (z[top] >= cut - 1e-6).all()
    assert len(top) <= int(np.ceil(0.25 * len(z))) + 1
    emb = bank_embeddings(run)
    np.testing.assert_allclose(
        exemplar_embedding(run, _q(gene)),
        emb[top].mean(0) - emb.mean(0),
        rtol=1e-5,
        atol=1e-6,
    )
    # a negative weight asks for the other end
    neg = exemplar_spots(run, GeneQuery((gene,), (-1.0,), (gene,)))
    assert z[neg].mean() < z[top].mean()


def test_exemplar_query_finds_the_spots_high_in_the_gene(run):
    """With perfectly aligned embeddings (each spot's own omics embedding), the
    exemplar query ranks the top-quartile spots of each gene first; breaking the
    exemplar choice (bottom quartile) would score below 0.5."""
    from napari_seal.retrieval.scoring import score_embeddings
    from napari_seal.training.reference_bank import bank_embeddings, bank_zscores

    emb = bank_embeddings(run)
    z = bank_zscores(run)
    var = z.var(axis=0)
    genes = [run.panel.genes[i] for i in np.argsort(-var)[:10]]
    aucs = []
    for gene in genes:
        j = run.panel.genes.index(gene)
        s = score_embeddings(run, emb, _q(gene), route="omics", omics_query="exemplar")
        aucs.append(auroc(s, z[:, j] > np.quantile(z[:, j], 0.75)))
    assert np.mean(aucs) > 0.6, aucs


def test_auto_uses_the_bank_and_falls_back_with_a_warning(run, caplog):
    from napari_seal.retrieval.scoring import query_embedding

    gene = run.panel.genes[1]
    ex = query_embedding(run, _q(gene), omics_query="exemplar")
    np.testing.assert_array_equal(query_embedding(run, _q(gene)), ex)
    old = dataclasses.replace(run, bank=None)
    with caplog.at_level(logging.WARNING, logger="napari_seal.retrieval.scoring"):
        prof = query_embedding(old, _q(gene))
    assert "no reference bank" in caplog.text
    np.testing.assert_array_equal(
        prof, query_embedding(old, _q(gene), omics_query="profile")
    )
    with pytest.raises(GeneQueryError, match="no reference bank"):
        query_embedding(old, _q(gene), omics_query="exemplar")
    with pytest.raises(GeneQueryError, match="omics_query"):
        query_embedding(run, _q(gene), omics_query="nearest")


# ----------------------------------------------------------------- reliability
def test_neighbours_of_bank_spots_include_themselves(run):
    from napari_seal.predict.reliability import neighbours, uncertainty
    from napari_seal.training.reference_bank import bank_embeddings, bank_zscores

    emb = bank_embeddings(run)[:50]
    nb = neighbours(run, emb, k=8)
    assert nb.index.shape == (50, 8)
    assert all(i in nb.index[i] for i in range(50))
    assert np.all(nb.similarity.max(axis=1) > 0.999)
    gene = run.panel.genes[2]
    spread = uncertainty(run, nb, gene, method="spread")
    z = bank_zscores(run)[:, 2]
    np.testing.assert_allclose(spread, z[nb.index].std(axis=1), rtol=1e-5, atol=1e-6)
    nov = uncertainty(run, nb, gene, method="novelty")
    np.testing.assert_allclose(nov, 1 - nb.similarity.mean(axis=1), atol=1e-6)
    pz = np.zeros(50, np.float32)
    dis = uncertainty(run, nb, gene, method="disagreement", predicted_z=pz)
    np.testing.assert_allclose(dis, np.abs(z[nb.index].mean(axis=1)), atol=1e-5)
    exp = uncertainty(run, nb, gene, method="expected-error", predicted_z=pz)
    np.testing.assert_allclose(exp, np.abs(z[nb.index]).mean(axis=1), atol=1e-5)
    # NaN rows (unfinished tiles) stay NaN; bad methods and genes are typed errors
    emb2 = emb.copy()
    emb2[3] = np.nan
    assert np.isnan(uncertainty(run, neighbours(run, emb2), gene)[3])
    with pytest.raises(GeneQueryError, match="not one of"):
        uncertainty(run, nb, gene, method="vibes")
    with pytest.raises(GeneQueryError, match="not in the run's gene panel"):
        uncertainty(run, nb, "NOTAGENE")
    with pytest.raises(GeneQueryError, match="predicted_z"):
        uncertainty(run, nb, gene, method="disagreement")


def test_reliability_needs_a_bank(run):
    from napari_seal.predict.reliability import neighbours

    with pytest.raises(GeneQueryError, match="reference bank"):
        neighbours(dataclasses.replace(run, bank=None), np.zeros((2, 4), np.float32))


def test_uncertainty_image_on_the_tile_grid(run, tiny_run, tiny_store):
    from napari_seal.predict.expression import expression_image, open_store
    from napari_seal.predict.reliability import (
        load_reference,
        tile_uncertainty,
        uncertainty_image,
    )

    store = open_store(tiny_store)
    ref = load_reference(tiny_run)  # no image encoder: what the viewer loads
    gene = run.panel.genes[0]
    img, scale, translate = uncertainty_image(store, ref, gene)
    img = np.asarray(img)
    expr, s2, t2 = expression_image(store, run, gene)
    assert img.shape == np.asarray(expr).shape
    assert (scale, translate) == (s2, t2)
    rows, cols = store.rows_cols
    per_tile = tile_uncertainty(store, ref, [gene])[:, 0]
    np.testing.assert_allclose(img[rows, cols], per_tile, rtol=1e-6)
    assert np.isfinite(per_tile).all()
    assert (per_tile >= 0).all()
    assert np.isnan(img).sum() == img.size - store.n_tiles
    # the light reference and the full run agree
    np.testing.assert_allclose(
        tile_uncertainty(store, run, [gene])[:, 0], per_tile, rtol=1e-5, atol=1e-6
    )


def test_load_reference_refuses_runs_without_bank(tmp_path, tiny_run):
    import shutil

    from napari_seal.predict.reliability import load_reference

    copy = tmp_path / "old"
    shutil.copytree(tiny_run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    (copy / "reference.npz").unlink()
    with pytest.raises(GeneQueryError, match="reference bank"):
        load_reference(copy)
    with pytest.raises(CheckpointError, match="not a finished SEAL run"):
        load_reference(tmp_path)


def test_evaluate_reliability_reports_every_method(run, her2st_dir, tmp_path):
    from napari_seal.evaluate.reliability_metrics import evaluate_reliability
    from napari_seal.io.convert import import_sample
    from napari_seal.io.hest import load_sample
    from napari_seal.predict.features import spot_features
    from napari_seal.progress import drain

    dest = import_sample(
        "legacy-st",
        [],
        out=tmp_path / "C3",
        sample_id="her2st_C3",
        counts=her2st_dir / "ST-cnts" / "C3.tsv.gz",
        spots=her2st_dir / "ST-spotfiles" / "C3_selection.tsv",
        image=her2st_dir / "ST-imgs" / "C" / "C3" / "5714_HE_BT_D1.jpg",
    )
    sample = load_sample(dest)
    emb = drain(spot_features(sample, run.encoder))
    rep = evaluate_reliability(run, sample, embeddings=emb, n_genes=5)
    assert rep["n_spots"] > 100
    assert len(rep["genes"]) >= 5
    for m in (
        "spread",
        "disagreement",
        "expected-error",
        "novelty",
        "predicted magnitude",
        "depth",
    ):
        v = rep["methods"][m]["mean"]
        assert 0.0 <= v <= 1.0, (m, v)


def test_query_result_carries_its_reliability_map(tmp_path, run, tiny_run, tiny_store):
    from napari_seal.io.hest import bundled_sample_path
    from napari_seal.predict.expression import open_store
    from napari_seal.predict.reliability import store_neighbours, uncertainty
    from napari_seal.retrieval.gene_query import query
    from napari_seal.retrieval.results import read_scores

    genes = list(run.panel.genes[:2])
    res = query(
        bundled_sample_path(),
        tiny_run,
        f"{genes[0]}:1,{genes[1]}:-1",
        route="omics",
        store=tiny_store,
        out=tmp_path / "q.zarr",
    )
    assert res.info["omics_query"] == "exemplar"
    assert "training spots" in res.score_name
    store = open_store(tiny_store)
    want = uncertainty(run, store_neighbours(store, run), {genes[0]: 1, genes[1]: -1})
    np.testing.assert_allclose(res.uncertainty, want, rtol=1e-5, atol=1e-6)
    back = read_scores(tmp_path / "q.zarr")
    np.testing.assert_array_equal(back.uncertainty, res.uncertainty)
    assert back.info["uncertainty"]["k_neighbours"] == K_NEIGHBOURS == 64
    # the viewer gets it as a hidden image layer on the score map's grid
    from napari_seal.layers import query_layers

    layers = {kw["name"]: (data, kw) for data, kw, _ in query_layers(back)}
    name = next(n for n in layers if n.startswith("uncertainty "))
    data, kw = layers[name]
    score_img = back.image().image
    assert data.shape == score_img.shape
    assert kw["visible"] is False
    assert kw["metadata"]["napari_seal"]["kind"] == "uncertainty"
    assert np.isfinite(data).sum() == np.isfinite(score_img).sum()


def test_exported_predictions_carry_the_uncertainty(
    tmp_path, run, tiny_run, tiny_store
):
    import anndata as ad

    from napari_seal.io.hest import bundled_sample_path
    from napari_seal.predict.export import write_predictions
    from napari_seal.predict.expression import open_store
    from napari_seal.predict.reliability import tile_uncertainty

    genes = list(run.panel.genes[:3])
    written = write_predictions(
        bundled_sample_path(),
        tiny_run,
        None,
        tmp_path / "pred.h5ad",
        store=tiny_store,
        genes=genes,
    )
    tiles = ad.read_h5ad(written["tiles"])
    unc = np.asarray(tiles.layers["uncertainty"])
    assert unc.shape == (tiles.n_obs, 3)
    np.testing.assert_allclose(
        unc, tile_uncertainty(open_store(tiny_store), run, genes), rtol=1e-5
    )
    assert tiles.uns["napari_seal"]["uncertainty"]["method"] == "spread"


def test_store_neighbours_are_cached_across_reopening(run, tiny_store):
    from napari_seal.predict import reliability
    from napari_seal.predict.expression import open_store
    from napari_seal.predict.reliability import neighbours, store_neighbours

    reliability._NEIGHBOUR_CACHE.clear()  # earlier tests filled it for this store
    a = open_store(tiny_store)
    first = store_neighbours(a, run)
    reads = a.stats["embedding_reads"]
    assert reads > 0  # block by block through read_embeddings
    b = open_store(tiny_store)  # the widget and the CLI reopen the store per query
    assert store_neighbours(b, run) is first
    assert b.stats["embedding_reads"] == 0
    # the same as the in-memory computation
    direct = neighbours(run, a.read_embeddings())
    np.testing.assert_array_equal(np.sort(first.index, 1), np.sort(direct.index, 1))
    assert first.valid.all()


def test_store_neighbours_of_a_store_being_embedded(tmp_path, run, tiny_store):
    """Only finished tiles are compared (the rest stay invalid, NaN uncertainty), and
    finishing more tiles recomputes instead of serving the stale map."""
    import shutil

    import zarr

    from napari_seal.predict.expression import open_store
    from napari_seal.predict.reliability import store_neighbours, uncertainty

    copy = tmp_path / "partial.zarr"
    shutil.copytree(tiny_store, copy)
    group = zarr.open_group(copy, mode="r+")
    chunk = int(group.attrs["chunk_tiles"])
    done = np.asarray(group["done"][:], dtype=bool)
    assert done.size >= 2
    done[0] = False
    group["done"][:] = done
    partial = open_store(copy)
    nb = store_neighbours(partial, run)
    gene = run.panel.genes[0]
    unc = uncertainty(run, nb, gene)
    assert not nb.valid[:chunk].any()
    assert nb.valid[chunk:].all()
    assert np.isnan(unc[:chunk]).all()
    assert np.isfinite(unc[chunk:]).all()
    full = store_neighbours(open_store(tiny_store), run)
    np.testing.assert_array_equal(
        np.sort(nb.index[chunk:], axis=1), np.sort(full.index[chunk:], axis=1)
    )
    done[0] = True
    group["done"][:] = done
    again = store_neighbours(open_store(copy), run)
    assert again is not nb
    assert again.valid.all()
