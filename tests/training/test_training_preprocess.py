"""Expression preprocessing: smoothing, normalisation, the global gene panel."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from napari_seal.errors import BadInputError, GeneQueryError, SpatialDataError
from napari_seal.io.sample import SpatialSample
from napari_seal.training.expression import (
    normalize_log1p,
    parse_gene_list,
    preprocess_sample,
    smooth_counts,
)
from napari_seal.training.preprocess import GenePanel, build_panel


def _sample(counts, xy, genes, *, name="s", mpp=1.0, pitch_um=10.0):
    adata = ad.AnnData(sp.csr_matrix(np.asarray(counts, dtype=np.float32)))
    adata.obs_names = [f"{name}{i}" for i in range(adata.n_obs)]
    adata.var_names = list(genes)
    adata.obsm["spatial"] = np.asarray(xy, dtype=np.float64)
    return SpatialSample(
        slide=None,
        adata=adata,
        mpp=mpp,
        spot_diameter_um=5.0,
        name=name,
        inter_spot_dist_um=pitch_um,
    )


def test_smoothing_on_a_square_grid_by_hand():
    # 3x3 grid, pitch 10 px; radius 15 px reaches the 4 sides and 4 diagonals (14.1 px)
    ys, xs = np.mgrid[0:3, 0:3]
    xy = np.stack([xs.ravel() * 10.0, ys.ravel() * 10.0], 1)
    x = np.arange(9, dtype=float)[:, None]  # one gene, value = spot index
    out = smooth_counts(x, xy, radius_px=15.0).toarray().ravel()
    # centre (4): neighbourhood = all 9 spots, mean 4 -> 0.5*4 + 0.5*4 = 4
    assert out[4] == pytest.approx(4.0)
    # corner (0): itself, 1, 3, 4 -> mean 2 -> 0.5*0 + 0.5*2 = 1
    assert out[0] == pytest.approx(1.0)
    # edge (1): 0, 1, 2, 3, 4, 5 -> mean 2.5 -> 0.5*1 + 1.25
    assert out[1] == pytest.approx(1.75)
    # radius 12 px: diagonals are out; corner: 0, 1, 3 -> mean 4/3
    out12 = smooth_counts(x, xy, radius_px=12.0).toarray().ravel()
    assert out12[0] == pytest.approx(0.5 * 0 + 0.5 * 4 / 3)


def test_sample_smoothing_radius_uses_inter_spot_distance_and_mpp():
    # hexagonal Visium-like lattice: 100 um pitch, 0.5 um/px -> 200 px pitch; the
    # 1.5-pitch radius (300 px) holds the 6 neighbours, not the next ring (346 px)
    pts = []
    for r in range(-3, 4):
        for c in range(-3, 4):
            pts.append((c * 200.0 + (r % 2) * 100.0, r * 200.0 * np.sqrt(3) / 2))
    xy = np.array(pts)
    centre = int(np.argmin(np.hypot(*(xy - xy.mean(0)).T)))
    counts = np.ones((len(xy), 2))
    counts[centre, 0] = 71.0  # only the centre spot expresses gene A above baseline
    s = _sample(counts, xy, ["A", "B"], mpp=0.5, pitch_um=100.0)
    prep = preprocess_sample(s, smooth=True, smooth_radius=1.5)
    raw = smooth_counts(counts, xy, radius_px=300.0).toarray()
    # centre: 0.5*71 + 0.5*(71 + 6*1)/7 = 35.5 + 5.5 = 41
    assert raw[centre, 0] == pytest.approx(41.0)
    d = np.hypot(*(xy - xy[centre]).T)
    ring1 = np.flatnonzero((d > 1) & (d < 250))
    assert len(ring1) == 6
    # a neighbour's own neighbourhood holds 7 spots (interior) incl. the centre
    interior = [i for i in ring1 if raw[i, 1] == pytest.approx(1.0)]
    assert interior
    expect = np.log1p(1e4 * raw[centre] / raw[centre].sum())
    np.testing.assert_allclose(
        prep.log_smoothed[centre].toarray().ravel(), expect, rtol=1e-5
    )


def test_normalize_log1p_and_empty_spots():
    x = np.array([[1.0, 3.0], [0.0, 0.0], [5.0, 5.0]])
    out = normalize_log1p(x).toarray()
    np.testing.assert_allclose(np.expm1(out).sum(1), [1e4, 0.0, 1e4], rtol=1e-5)
    np.testing.assert_allclose(out[0], np.log1p([2500.0, 7500.0]), rtol=1e-6)


def test_gene_names_cleaned():
    s = _sample(
        np.ones((3, 4)),
        np.zeros((3, 2)) + [[0, 0], [1, 0], [2, 0]],
        ["erbb2", "BLANK_001", "NegControlProbe_1", "Krt19"],
    )
    prep = preprocess_sample(s, smooth=False)
    assert list(prep.genes) == ["ERBB2", "KRT19"]


def _panel_samples():
    """200 genes over a range of means; G0, G40, ..., G160 are over-dispersed."""
    rng = np.random.default_rng(0)
    genes = [f"G{i}" for i in range(200)] + ["ERBB2", "PTPRC", "CD74"]
    rates = np.exp(np.linspace(np.log(2.0), np.log(200.0), len(genes)))
    samples = []
    for k in range(2):
        n = 150
        lam = np.tile(rates, (n, 1))
        for g in range(0, 200, 40):
            lam[:, g] *= rng.gamma(0.5, 2.0, size=n)  # mean-preserving, very dispersed
        counts = rng.poisson(lam).astype(float)
        xy = rng.uniform(0, 1000, size=(n, 2))
        samples.append(_sample(counts, xy, genes, name=f"p{k}", pitch_um=50.0))
    return samples


def test_panel_hvgs_markers_and_include_genes():
    samples = _panel_samples()
    panel = build_panel(
        samples,
        n_hvg=5,
        include_genes="g20, G21",
        markers=("ERBB2", "NOPE1"),
        smooth=False,
    )
    assert set(panel.genes[:5]) == {f"G{i}" for i in range(0, 200, 40)}
    assert panel.genes[5:] == ("ERBB2", "G20", "G21")
    assert panel.sources == ("hvg",) * 5 + ("marker", "include", "include")
    expr = np.concatenate([panel.expression(s) for s in samples])
    np.testing.assert_allclose(panel.mean, expr.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(panel.std, expr.std(0), rtol=1e-4)
    z = panel.zscore(expr)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)


def test_panel_uses_scanpy_seurat_ranking():
    import scanpy as sc

    samples = _panel_samples()
    panel = build_panel(samples, n_hvg=12, markers=None, smooth=False)
    preps = [preprocess_sample(s, smooth=False) for s in samples]
    adata = ad.AnnData(sp.vstack([p.log_plain for p in preps]).tocsr())
    adata.var_names = list(preps[0].genes)
    sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=12)
    expected = set(adata.var_names[adata.var["highly_variable"].to_numpy()])
    assert set(panel.genes) == expected


def test_unknown_include_gene_suggests_near_misses():
    with pytest.raises(GeneQueryError, match=r"ERBB3X \(did you mean ERBB2"):
        build_panel(_panel_samples(), n_hvg=5, include_genes=["ERBB3X"])


def test_missing_panel_genes_are_filled_with_zero_or_rejected():
    samples = _panel_samples()
    panel = build_panel(samples, n_hvg=5, markers=("ERBB2", "PTPRC"))
    other = samples[0].adata[:, [g for g in samples[0].adata.var_names if g != "ERBB2"]]
    s = _sample(other.X.toarray(), samples[0].spots_xy, other.var_names, pitch_um=50.0)
    with pytest.warns(UserWarning, match="lacks 1 of the 7 panel genes"):
        expr = panel.expression(s)
    assert np.all(expr[:, panel.index("ERBB2")] == 0)
    few = _sample(
        np.ones((4, 3)),
        np.zeros((4, 2)) + np.arange(4)[:, None],
        ["G0", "X1", "X2"],
        pitch_um=50.0,
    )
    with pytest.raises(SpatialDataError, match="lacks 6 of the 7 panel genes"):
        panel.expression(few)


def test_panel_round_trips_exactly(tmp_path):
    panel = build_panel(_panel_samples(), n_hvg=5)
    panel.save(tmp_path / "panel.json")
    back = GenePanel.load(tmp_path / "panel.json")
    assert back.genes == panel.genes
    assert back.sources == panel.sources
    assert np.array_equal(back.mean, panel.mean)
    assert np.array_equal(back.std, panel.std)
    assert back.preprocessing == panel.preprocessing
    assert list(back.index(["erbb2", "G0"])) == [panel.genes.index("ERBB2"), 0]
    with pytest.raises(GeneQueryError, match="did you mean"):
        back.index("ERBB")


def test_parse_gene_list(tmp_path):
    assert parse_gene_list("ERBB2, KRT19,erbb2") == ("ERBB2", "KRT19")
    f = tmp_path / "genes.txt"
    f.write_text("ERBB2\nESR1 PGR\n\n")
    assert parse_gene_list(str(f)) == ("ERBB2", "ESR1", "PGR")
    with pytest.raises(BadInputError, match="does not exist"):
        parse_gene_list(str(tmp_path / "nope.txt"))


def test_real_her2st_panel_on_bundled_section():
    from napari_seal.io.hest import bundled_sample_path, load_sample

    s = load_sample(bundled_sample_path())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        panel = build_panel([s], n_hvg=256, include_genes="GAPDH")
    assert len(panel) > 256
    assert panel.genes[-1] == "GAPDH"
    for marker in ("ERBB2", "ESR1", "KRT19", "PTPRC", "CD74", "COL1A1"):
        assert marker in panel.genes
    expr = panel.expression(s)
    assert expr.shape == (s.n_spots, len(panel))
    assert np.isfinite(expr).all()
    # ERBB2 is high in this HER2+ tumour: its normalised level beats most genes'
    erbb2 = expr[:, panel.index("ERBB2")[0]].mean()
    assert erbb2 > np.median(expr.mean(0))
