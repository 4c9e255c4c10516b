"""The HEST probe protocol on arrays (napari_seal.predict.probe): known answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import pearsonr

import napari_seal.predict.probe as _probe
from napari_seal.errors import BadInputError


def _signal_data(rng, n, *, d_noise=40, g=60, noise=0.3):
    """Features that carry the targets (targets + noise) plus pure-noise dims."""
    z = rng.normal(size=(n, 5))
    w = rng.normal(size=(5, g))
    y = z @ w + 0.1 * rng.normal(size=(n, g)) + 5.0  # not centred, like log1p counts
    x = np.hstack([y + noise * rng.normal(size=y.shape), rng.normal(size=(n, d_noise))])
    return x, y


def test_hest_alpha_value_and_components():
    assert _probe.hest_alpha(256) == pytest.approx(100 / (256 * 50))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 300))
    y = rng.normal(size=(400, 50))
    probe = _probe.fit_probe(x, y)
    assert probe.n_pc == 256
    assert probe.alpha == pytest.approx(0.0078125)
    # fewer feature dims than 256: n_pc = D and the HEST formula follows it
    probe = _probe.fit_probe(x[:, :28], y)
    assert probe.n_pc == 28
    assert probe.alpha == pytest.approx(100 / (28 * 50))
    # fewer training spots than 256
    probe = _probe.fit_probe(x[:100], y[:100])
    assert probe.n_pc == 100


def test_probe_matches_sklearn_hest_pipeline():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    x, y = _signal_data(rng, 300, d_noise=280)
    probe = _probe.fit_probe(x[:200], y[:200])
    ref = make_pipeline(
        StandardScaler(),
        PCA(n_components=200, random_state=0),
        Ridge(
            alpha=100 / (200 * 60), fit_intercept=False, solver="lsqr", max_iter=1000
        ),
    ).fit(x[:200], y[:200])
    np.testing.assert_allclose(
        probe.predict(x[200:], offset=False), ref.predict(x[200:]), rtol=1e-6, atol=1e-6
    )
    # the offset is the training mean (HEST's no-intercept fit is centred otherwise)
    np.testing.assert_allclose(probe.offset, y[:200].mean(axis=0))
    np.testing.assert_allclose(
        probe.predict(x[:200]).mean(axis=0), y[:200].mean(axis=0), atol=1e-6
    )


def test_signal_features_score_high_random_features_score_zero():
    rng = np.random.default_rng(2)
    x, y = _signal_data(rng, 700)
    probe = _probe.fit_probe(x[:400], y[:400])
    r = _probe.pearson_per_gene(probe.predict(x[400:]), y[400:])
    assert r.mean() > 0.9
    noise = rng.normal(size=x.shape)
    probe = _probe.fit_probe(noise[:400], y[:400])
    r = _probe.pearson_per_gene(probe.predict(noise[400:]), y[400:])
    assert abs(r.mean()) < 0.05
    assert r.std() < 0.2


def test_pearson_matches_scipy_and_constant_scores_zero():
    rng = np.random.default_rng(3)
    p, t = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    r = _probe.pearson_per_gene(p, t)
    for j in range(4):
        assert r[j] == pytest.approx(pearsonr(p[:, j], t[:, j])[0], abs=1e-12)
    t[:, 1] = 3.0  # constant target (e.g. a gene filled with zeros)
    p[:, 2] = 7.0  # constant prediction
    r = _probe.pearson_per_gene(p, t)
    assert r[1] == 0.0
    assert r[2] == 0.0
    assert r[0] != 0.0
    assert np.all(np.isfinite(r))


def test_targets_modes_dense_and_sparse_agree():
    rng = np.random.default_rng(4)
    counts = rng.poisson(2.0, size=(30, 20)).astype(float)
    counts[3] = 0  # a spot without counts stays zero
    hest = _probe.make_targets(counts, mode="hest")
    np.testing.assert_allclose(hest, np.log1p(counts))
    norm = _probe.make_targets(counts, mode="normalized")
    sums = np.expm1(norm).sum(axis=1)
    np.testing.assert_allclose(np.delete(sums, 3), 1e4)
    assert sums[3] == 0
    for mode in ("hest", "normalized"):
        sparse = _probe.make_targets(sp.csr_matrix(counts), mode=mode)
        assert sp.issparse(sparse)
        np.testing.assert_allclose(
            sparse.toarray(), _probe.make_targets(counts, mode=mode)
        )
    with pytest.raises(BadInputError, match="target mode"):
        _probe.make_targets(counts, mode="raw")
    with pytest.raises(BadInputError, match="negative"):
        _probe.make_targets(-counts, mode="hest")


def test_select_genes_top_variance_on_shared_genes():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(40, 6)) * np.array([1, 5, 2, 9, 3, 0.1])
    b = rng.normal(size=(40, 5)) * np.array([1, 5, 2, 9, 3])
    names_a = ["g0", "g1", "g2", "g3", "g4", "only_a"]
    names_b = ["g0", "g1", "g2", "g3", "g4"]
    genes = _probe.select_genes([a, sp.csr_matrix(b)], [names_a, names_b], n_genes=3)
    assert genes == ["g3", "g1", "g4"]
    # a gene missing from one training sample is never chosen
    a[:, 5] *= 1000
    assert "only_a" not in _probe.select_genes([a, b], [names_a, names_b], n_genes=5)
    with pytest.raises(BadInputError, match="share no gene"):
        _probe.select_genes([a, b], [names_a, ["x"] * 5])


def test_gene_matrix_fills_missing_with_zeros():
    x = sp.csr_matrix(np.arange(12, dtype=float).reshape(3, 4))
    out, missing = _probe.gene_matrix(x, ["a", "b", "c", "d"], ["c", "zz", "a"])
    assert missing == ["zz"]
    np.testing.assert_array_equal(out, [[2, 0, 0], [6, 0, 4], [10, 0, 8]])


def test_depth_feature():
    counts = sp.csr_matrix(np.array([[1.0, 2.0], [0.0, 0.0]]))
    np.testing.assert_allclose(_probe.depth_feature(counts), [[np.log1p(3)], [0.0]])


def test_cv_alpha_shrinks_when_features_are_mostly_noise():
    rng = np.random.default_rng(6)
    feats, tgts = [], []
    for _ in range(3):
        s = rng.normal(size=(60, 1))
        feats.append(np.hstack([s, rng.normal(size=(60, 200))]))
        tgts.append(s + 0.5 * rng.normal(size=(60, 10)))
    best, scores = _probe.cv_alpha(feats, tgts)
    assert set(scores) == set(_probe.CV_ALPHA_GRID)
    assert scores[best] == max(scores.values())
    # HEST's alpha interpolates 120 spots with 120 PCs: shrinkage must win here
    assert best > 1.0
    assert scores[best] > scores[min(scores)] + 0.03
    with pytest.raises(BadInputError, match="at least 2 training samples"):
        _probe.cv_alpha(feats[:1], tgts[:1])


def test_fit_probe_rejects_bad_input():
    with pytest.raises(BadInputError, match="pair spot by spot"):
        _probe.fit_probe(np.zeros((5, 3)), np.zeros((4, 2)))
    bad = np.ones((5, 3))
    bad[0, 0] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        _probe.fit_probe(bad, np.zeros((5, 2)))
