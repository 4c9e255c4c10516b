"""bench / loso_bench / heads on synthetic samples whose features are known.

The encoder is replaced by a stand-in whose features are stored in the sample
(``obsm["feat"]``), so these tests check folds, gene choice, leakage, the report and
heads without a model; the real encoder path is tested on her2st elsewhere.
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp

import napari_seal.evaluate.benchmark as evaluate
import napari_seal.predict.probe as _probe
from napari_seal.errors import BadInputError, EncoderMismatchError
from napari_seal.io.sample import SpatialSample
from napari_seal.progress import Progress

N_GENES = 120
GENES = [f"G{i:03d}" for i in range(N_GENES)]
ENC = SimpleNamespace(name="stand-in", tile_px=8, mpp=1.0, weights=None)


def _sample(rng, name, *, n=90, signal=True, w=None):
    import anndata as ad

    z = rng.normal(size=(n, 4))
    w = rng.normal(size=(4, N_GENES)) * 0.6 if w is None else w
    depth = rng.uniform(0.5, 1.5, size=(n, 1))
    counts = rng.poisson(depth * np.exp(1.0 + z @ w)).astype(np.float32)
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.var_names = GENES
    adata.obs_names = [f"{name}_{i}" for i in range(n)]
    adata.obsm["spatial"] = rng.uniform(0, 1000, size=(n, 2))
    feat = np.log1p(counts) if signal else rng.normal(size=(n, N_GENES))
    adata.obsm["feat"] = (feat + 0.3 * rng.normal(size=feat.shape)).astype(np.float32)
    return SpatialSample(
        slide=None, adata=adata, mpp=1.0, spot_diameter_um=55.0, name=name
    )


@pytest.fixture
def calls(monkeypatch):
    """Replace the encoder pass: features come from obsm["feat"]; count the calls."""
    seen = []
    real = evaluate.spot_features

    def fake_features(sample, encoder, *, batch_size=64, device=None):
        if encoder is None:  # the depth oracle path stays real
            return (yield from real(sample, None))
        seen.append(sample.name)
        yield Progress("features", done=sample.n_spots, total=sample.n_spots)
        return sample.adata.obsm["feat"]

    monkeypatch.setattr(evaluate, "spot_features", fake_features)
    return seen


@pytest.fixture
def samples():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, N_GENES)) * 0.6
    return [_sample(rng, f"S{i}", w=w) for i in range(4)]


def test_report_schema_and_signal(calls, samples):
    events = []
    res = evaluate.bench(samples[:3], samples[3:], encoder=ENC, progress=events.append)
    assert {
        "encoder",
        "protocol",
        "targets",
        "alpha",
        "genes",
        "folds",
        "pearson_mean",
    } <= set(res)
    assert res["encoder"] == "stand-in"
    assert res["protocol"] == "hest"
    assert res["targets"] == "hest"
    assert res["alpha"] == "hest"
    assert len(res["genes"]) == 50
    assert [f["test"] for f in res["folds"]] == ["S3"]
    fold = res["folds"][0]
    assert list(fold["per_gene"]) == res["genes"]
    assert fold["pearson_mean"] == pytest.approx(
        np.mean(list(fold["per_gene"].values()))
    )
    assert res["pearson_mean"] == pytest.approx(fold["pearson_mean"])
    assert fold["n_train"] == 270
    assert fold["alpha_value"] == pytest.approx(100 / (fold["n_pc"] * 50))
    assert fold["n_pc"] == 120  # min(256, 270 spots, D = 120)
    assert res["pearson_mean"] > 0.6  # the features carry the expression
    assert np.isfinite(res["depth_oracle"]["pearson_mean"])
    json.dumps(res)  # machine-readable as is
    assert any(e.stage == "probe" for e in events)
    assert sorted(calls) == ["S0", "S1", "S2", "S3"]


def test_random_features_score_near_zero(calls):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, N_GENES)) * 0.6
    noise = [_sample(rng, f"N{i}", w=w, signal=False, n=150) for i in range(3)]
    for targets in ("hest", "normalized"):
        res = evaluate.bench(noise[:2], noise[2:], encoder=ENC, targets=targets)
        assert abs(res["pearson_mean"]) < 0.06


def test_loso_folds_embed_each_sample_once(calls, samples):
    res = evaluate.loso_bench(samples, encoder=ENC, targets="normalized")
    assert res["mode"] == "loso"
    assert [f["test"] for f in res["folds"]] == ["S0", "S1", "S2", "S3"]
    assert sorted(calls) == ["S0", "S1", "S2", "S3"]
    for fold in res["folds"]:
        assert fold["test"] not in fold["train"]
        assert len(fold["train"]) == 3
        assert len(fold["genes"]) == 50
    assert res["pearson_mean"] == pytest.approx(
        np.mean([f["pearson_mean"] for f in res["folds"]])
    )
    # a shared cache skips the encoder on the next call
    cache = {}
    evaluate.loso_bench(samples, encoder=ENC, features_cache=cache)
    n = len(calls)
    evaluate.loso_bench(
        samples, encoder=ENC, targets="normalized", features_cache=cache
    )
    assert len(calls) == n
    # another encoder object of the same name does not reuse those features
    twin = SimpleNamespace(**vars(ENC))
    evaluate.loso_bench(samples, encoder=twin, features_cache=cache)
    assert len(calls) == n + 4


def test_genes_come_from_training_spots_only(calls, samples):
    base = evaluate.bench(samples[:3], samples[3:], encoder=ENC)
    # make the test sample's least-chosen genes wildly variable: genes must not move
    test = samples[3]
    x = test.adata.X.toarray()
    rng = np.random.default_rng(9)
    unchosen = [i for i, g in enumerate(GENES) if g not in base["genes"]]
    x[:, unchosen] = rng.poisson(500.0, size=(x.shape[0], len(unchosen)))
    test.adata.X = sp.csr_matrix(x)
    again = evaluate.bench(samples[:3], [test], encoder=ENC)
    assert again["genes"] == base["genes"]
    # the same change in a training sample does change them (the test can fail)
    changed = evaluate.bench([test, *samples[1:3]], [samples[0]], encoder=ENC)
    assert changed["genes"] != base["genes"]


def test_alpha_cv(calls, samples):
    res = evaluate.bench(samples[:3], samples[3:], encoder=ENC, alpha="cv")
    fold = res["folds"][0]
    assert res["alpha"] == "cv"
    assert fold["alpha_value"] in _probe.CV_ALPHA_GRID
    scores = fold["cv_scores"]
    assert len(scores) == len(_probe.CV_ALPHA_GRID)
    assert scores[f"{fold['alpha_value']:g}"] == max(scores.values())
    with pytest.raises(BadInputError, match="at least 2 training samples"):
        evaluate.bench(samples[:1], samples[3:], encoder=ENC, alpha="cv")


def test_missing_genes_fill_policy(calls, samples, caplog):
    base = evaluate.bench(samples[:3], samples[3:], encoder=ENC)
    drop = base["genes"][:3]
    test = samples[3]
    keep = [g for g in GENES if g not in drop]
    test.adata = test.adata[:, keep].copy()
    with caplog.at_level(logging.WARNING, logger="napari_seal.evaluate.benchmark"):
        res = evaluate.bench(samples[:3], [test], encoder=ENC)
    assert "filled with zeros" in caplog.text
    fold = res["folds"][0]
    assert fold["missing_genes"] == drop
    assert all(fold["per_gene"][g] == 0.0 for g in drop)
    assert fold["per_gene"][base["genes"][5]] == pytest.approx(
        base["folds"][0]["per_gene"][base["genes"][5]]
    )
    # most genes missing: other identifiers, bad input rather than zeros
    test.adata = test.adata[:, [g for g in keep if g not in base["genes"][:40]]].copy()
    with pytest.raises(BadInputError, match="gene identifiers"):
        evaluate.bench(samples[:3], [test], encoder=ENC)


def test_depth_encoder_equals_depth_oracle(calls, samples):
    res = evaluate.bench(samples[:3], samples[3:], encoder=ENC, targets="normalized")
    depth = evaluate.bench(
        samples[:3], samples[3:], encoder="depth", targets="normalized"
    )
    assert depth["encoder"] == "depth"
    assert depth["pearson_mean"] == pytest.approx(res["depth_oracle"]["pearson_mean"])
    assert depth["folds"][0]["n_pc"] == 1


def test_save_head_round_trip(calls, samples, tmp_path):
    head_dir = tmp_path / "head.safetensors"
    res = evaluate.bench(
        samples[:3], samples[3:], encoder=ENC, targets="normalized", save_head=head_dir
    )
    head = evaluate.load_head(head_dir)
    assert head.genes == res["genes"]
    assert head.meta["targets"] == "normalized"
    assert head.meta["encoder"] == "stand-in"
    feats = samples[3].adata.obsm["feat"]
    pred = evaluate.apply_head(head, feats)
    assert pred.shape == (samples[3].n_spots, 50)
    # identical to a probe fitted afresh on the same training data
    tr = [s.adata for s in samples[:3]]
    y = np.concatenate(
        [
            _probe.gene_matrix(
                _probe.make_targets(_probe.raw_counts(a), mode="normalized"),
                GENES,
                res["genes"],
            )[0]
            for a in tr
        ]
    )
    probe = _probe.fit_probe(np.concatenate([a.obsm["feat"] for a in tr]), y)
    np.testing.assert_array_equal(pred, probe.predict(feats).astype(np.float32))
    np.testing.assert_array_equal(pred, evaluate.apply_head(head_dir, feats))
    # the head's predictions give the reported Pearson
    yt = _probe.gene_matrix(
        _probe.make_targets(_probe.raw_counts(samples[3].adata), mode="normalized"),
        GENES,
        res["genes"],
    )[0]
    r = _probe.pearson_per_gene(pred, yt)
    np.testing.assert_allclose(r, list(res["folds"][0]["per_gene"].values()), atol=1e-4)
    with pytest.raises(EncoderMismatchError, match="120-d"):
        evaluate.apply_head(head, feats[:, :100])
    assert head.embed_dim == 120
    # the description is readable without napari-seal (safetensors JSON header)
    from safetensors import safe_open

    with safe_open(str(head_dir), "np") as fh:
        assert json.loads(fh.metadata()["description"])["genes"] == res["genes"]
    with pytest.raises(BadInputError, match="is a folder"):
        evaluate.bench(samples[:3], samples[3:], encoder=ENC, save_head=tmp_path)


def test_head_refuses_tampered_or_foreign_files(calls, samples, tmp_path):
    head = tmp_path / "head.safetensors"
    evaluate.bench(samples[:3], samples[3:], encoder=ENC, save_head=head)
    head.write_bytes(head.read_bytes()[:-8])  # truncated
    with pytest.raises(BadInputError, match="not a napari-seal head"):
        evaluate.load_head(head)
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(BadInputError, match="not a napari-seal head"):
        evaluate.load_head(tmp_path / "other.safetensors")
    with pytest.raises(BadInputError, match="not a file"):
        evaluate.load_head(tmp_path / "nothing-here")
    with pytest.raises(BadInputError, match="--loso"):
        evaluate.loso_bench(samples, encoder=ENC, save_head=tmp_path / "h2")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train": [], "test": []}, "no training samples"),
        ({"test": None}, "needs --test"),
        ({"loso": True, "train": ["a"], "test": None}, "at least 2 samples"),
        ({"targets": "raw"}, "target mode"),
        ({"alpha": "loo"}, "alpha mode"),
        ({"batch_size": 0}, "batch_size"),
        ({"train": ["/no/such/sample"], "test": ["/no/such/other"]}, "does not exist"),
    ],
)
def test_bad_input(calls, samples, kwargs, match):
    args = {"train": samples[:2], "test": samples[2:], "encoder": ENC, **kwargs}
    train, test = args.pop("train"), args.pop("test")
    with pytest.raises(BadInputError, match=match):
        evaluate.bench(train, test, **args)
