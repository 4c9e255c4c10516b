"""ST readers (legacy ST, Space Ranger, h5ad), the spot-grid pixel size, validation."""

from __future__ import annotations

import gzip
import json
import math
import shutil
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from robust_helpers import legacy_tables

from napari_seal.errors import BadInputError, MppUnknownError, SpatialDataError
from napari_seal.io.st.contract import validate_st
from napari_seal.io.st.grid import (
    array_to_um,
    estimate_mpp_from_grid,
    estimate_mpp_from_spacing,
    estimate_st_mpp,
    resolve_mpp,
)
from napari_seal.io.st.read import read_st

# spots (counts ∩ selection) and genes per section, from her2st/SOURCE.md
HER2ST = {
    "C2": (187, 15706),
    "C3": (180, 15821),
    "C4": (184, 15842),
    "C5": (181, 15721),
    "C6": (178, 15772),
}
DROPPED = {"C2": 0, "C3": 2, "C4": 3, "C5": 2, "C6": 1}


def _legacy(her2st_dir, sec):
    return (
        her2st_dir / "ST-cnts" / f"{sec}.tsv.gz",
        her2st_dir / "ST-spotfiles" / f"{sec}_selection.tsv",
    )


# ---------------------------------------------------------------- grid fit


@pytest.mark.parametrize("angle_deg", [0.0, 3.0, -90.0])
def test_affine_grid_fit_recovers_pixel_size_square(angle_deg):
    rng = np.random.default_rng(0)
    ax, ay = np.meshgrid(np.arange(3, 30), np.arange(2, 32))
    arr = np.column_stack([ax.ravel(), ay.ravel()])
    mpp = 0.6875
    t = math.radians(angle_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    px = (array_to_um(arr, lattice="square", pitch_um=200.0) / mpp) @ rot.T + [
        150.0,
        -40.0,
    ]
    px += rng.normal(0, 3.0, px.shape)
    fit = estimate_mpp_from_grid(px, arr, lattice="square", pitch_um=200.0)
    assert fit.mpp == pytest.approx(mpp, rel=2e-3)
    assert fit.residual_rms_px < 6


def test_affine_grid_fit_hex_visium_geometry():
    rows, cols = np.meshgrid(np.arange(0, 40), np.arange(0, 60))
    rows, cols = rows.ravel(), cols.ravel()
    keep = (rows + cols) % 2 == 0  # Visium: array_col steps by 2 within a row
    rows, cols = rows[keep], cols[keep]
    mpp = 0.3
    # neighbours in a row 100 um apart, rows 100*sqrt(3)/2 um apart
    px = np.column_stack([cols * 50.0, rows * 50.0 * math.sqrt(3)]) / mpp
    fit = estimate_mpp_from_grid(
        px, np.column_stack([cols, rows]), lattice="hex", pitch_um=100.0
    )
    assert fit.mpp == pytest.approx(mpp, rel=1e-9)
    assert fit.mpp_x == pytest.approx(fit.mpp_y, rel=1e-9)
    nn = estimate_mpp_from_spacing(px, pitch_um=100.0)
    assert nn.mpp == pytest.approx(mpp, rel=1e-6)


def test_grid_fit_refuses_collinear_spots():
    arr = np.column_stack([np.arange(10), np.zeros(10)])
    with pytest.raises(MppUnknownError, match="--mpp"):
        estimate_mpp_from_grid(arr * 300.0, arr, lattice="square", pitch_um=200.0)


# ---------------------------------------------------------------- legacy ST (real)


@pytest.mark.parametrize("sec", sorted(HER2ST))
def test_legacy_st_her2st_sections(her2st_dir, sec):
    counts, spots = _legacy(her2st_dir, sec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = read_st("legacy-st", counts=counts, spots=spots)
    n_spots, n_genes = HER2ST[sec]
    assert st.adata.shape == (n_spots, n_genes)
    dropped = [str(w.message) for w in caught if "dropped" in str(w.message)]
    if DROPPED[sec]:
        n_sel = n_spots + DROPPED[sec]
        assert len(dropped) == 1
        assert f"{DROPPED[sec]} of {n_sel} selected spots" in dropped[0]
        assert f"keeping {n_spots} spots" in dropped[0]
    else:
        assert dropped == []
    fit = estimate_st_mpp(st)
    assert 0.68 <= fit.mpp <= 0.70
    assert 0.685 <= fit.mpp <= 0.690  # SOURCE.md: "about 0.686-0.689"
    assert st.st_technology == "Spatial Transcriptomics"
    assert st.spot_diameter_um == 100.0
    assert st.inter_spot_dist_um == 200.0
    # ids stay "XxY" and match the array coordinates
    name = st.adata.obs_names[0]
    x, y = (int(v) for v in name.split("x"))
    assert (st.adata.obs["array_col"].iloc[0], st.adata.obs["array_row"].iloc[0]) == (
        x,
        y,
    )


def test_legacy_st_keeps_raw_counts_and_pixels(her2st_dir):
    counts, spots = _legacy(her2st_dir, "C2")
    st = read_st("legacy-st", counts=counts, spots=spots)
    raw = pd.read_csv(counts, sep="\t", index_col=0)
    table = pd.read_csv(spots, sep="\t")
    assert sp.issparse(st.adata.X)
    x = st.adata.X.toarray()
    expected = raw.loc[st.adata.obs_names].to_numpy()
    np.testing.assert_array_equal(x, expected)  # every gene, raw integers
    assert list(st.adata.var_names) == list(raw.columns)
    row = table[(table.x == 25) & (table.y == 13)].iloc[0]
    i = st.adata.obs_names.get_loc("25x13")
    np.testing.assert_allclose(st.adata.obsm["spatial"][i], [row.pixel_x, row.pixel_y])


def test_legacy_st_does_not_depend_on_file_names(her2st_dir, tmp_path):
    counts, spots = _legacy(her2st_dir, "C3")
    raw = pd.read_csv(counts, sep="\t", index_col=0).iloc[:, :400]
    table = pd.read_csv(spots, sep="\t")
    # comma-separated, not gzipped, other names, genes as rows, extra columns
    raw.T.to_csv(tmp_path / "expression_matrix.csv")
    table["note"] = "x"
    table = table[["pixel_y", "selected", "note", "y", "x", "pixel_x", "new_x"]]
    table.loc[len(table)] = [1.0, 0, "off", 99, 99, 1.0, 0.0]  # an unselected spot
    table.to_csv(
        tmp_path / "positions.txt.gz", sep="\t", index=False, compression="gzip"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = read_st(
            "legacy-st",
            counts=tmp_path / "expression_matrix.csv",
            spots=tmp_path / "positions.txt.gz",
        ).adata
    assert any("2 of 182 selected spots" in str(w.message) for w in caught)
    assert a.shape == (180, 400)
    np.testing.assert_array_equal(a.X.toarray(), raw.loc[a.obs_names].to_numpy())
    sel = table.set_index(table.x.astype(str) + "x" + table.y.astype(str))
    np.testing.assert_array_equal(
        a.obsm["spatial"], sel.loc[a.obs_names, ["pixel_x", "pixel_y"]].to_numpy()
    )


# ---------------------------------------------------------------- Visium / h5ad (real)


def test_spaceranger_fixture(shared_data):
    root = shared_data / "visium_scanpy_tiny"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = read_st("visium", root)
    msgs = " | ".join(str(w.message) for w in caught)
    assert "blank placeholder" in msgs  # the hires PNG of this fixture is all black
    assert "4135 of 4235 in-tissue spots have no counts" in msgs
    assert st.adata.shape == (100, 100)
    assert st.image.name == "tissue_lowres_image.png"
    sf = json.loads((root / "spatial" / "scalefactors_json.json").read_text())
    assert st.image_scale == pytest.approx(sf["tissue_lowres_scalef"])
    pos = pd.read_csv(
        root / "spatial" / "tissue_positions_list.csv", header=None, index_col=0
    )
    bc = st.adata.obs_names[0]
    np.testing.assert_allclose(
        st.adata.obsm["spatial"][0], pos.loc[bc, [5, 4]].to_numpy() * st.image_scale
    )
    assert st.adata.obs["array_row"].iloc[0] == pos.loc[bc, 2]
    fit = estimate_st_mpp(st)
    fullres_mpp = fit.mpp * st.image_scale
    assert 0.6 < fullres_mpp < 0.8  # 55 um spots of ~89 px at full resolution
    assert fit.residual_rms_px < 0.5


def test_spaceranger_positions_with_header_and_fullres_image(shared_data, tmp_path):
    root = tmp_path / "outs"
    shutil.copytree(shared_data / "visium_scanpy_tiny", root)
    cols = [
        "barcode",
        "in_tissue",
        "array_row",
        "array_col",
        "pxl_row_in_fullres",
        "pxl_col_in_fullres",
    ]
    pos = pd.read_csv(
        root / "spatial" / "tissue_positions_list.csv", header=None, names=cols
    )
    (root / "spatial" / "tissue_positions_list.csv").unlink()
    pos.to_csv(root / "spatial" / "tissue_positions.csv", index=False)  # Space Ranger 2
    fullres = tmp_path / "fullres.jpg"
    fullres.write_bytes(b"\xff\xd8\xff")  # only its path is used by the reader
    st = read_st("visium", tmp_path, image=fullres)
    assert st.image == fullres
    assert st.image_scale == 1.0
    p = pos.set_index("barcode").loc[st.adata.obs_names]
    np.testing.assert_array_equal(
        st.adata.obsm["spatial"], p[["pxl_col_in_fullres", "pxl_row_in_fullres"]]
    )
    fit = estimate_st_mpp(st)
    assert 0.6 < fit.mpp < 0.8
    (root / "spatial" / "tissue_positions.csv").unlink()
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        (root / "spatial" / "tissue_positions.parquet").write_bytes(b"PAR1")
        with pytest.raises(BadInputError, match="pip install pyarrow"):
            read_st("visium", root)
    else:
        pos.to_parquet(root / "spatial" / "tissue_positions.parquet")
        assert read_st("visium", root).adata.n_obs == 100


def test_h5ad_fixture(shared_data):
    root = shared_data / "squidpy_visium_crop"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        st = read_st("h5ad", root / "test_data.h5ad", image=root / "test_img.jpg")
    assert any("not integers" in str(w.message) for w in caught)
    assert st.adata.shape == (49, 1999)
    assert st.st_technology == "Visium"
    fit = estimate_st_mpp(st)
    assert fit.method == "spacing"
    assert 0.65 < fit.mpp < 0.8  # SOURCE.md: roughly 0.7 um/px


# ---------------------------------------------------------------- bad input


def _tiny_adata(n=4):
    a = ad.AnnData(sp.csr_matrix(np.arange(n * 3, dtype=np.float32).reshape(n, 3)))
    a.obs_names = [f"s{i}" for i in range(n)]
    a.obsm["spatial"] = np.column_stack([np.arange(n) * 10.0 + 5, np.full(n, 5.0)])
    return a


def test_validate_st_accepts_good_data():
    validate_st(_tiny_adata(), image_size=(100, 100))


def test_validate_missing_spatial():
    a = _tiny_adata()
    del a.obsm["spatial"]
    with pytest.raises(SpatialDataError, match=r"obsm\['spatial'\] is missing.*set"):
        validate_st(a)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_validate_non_finite_coordinates(bad):
    a = _tiny_adata()
    a.obsm["spatial"][2, 1] = bad
    with pytest.raises(SpatialDataError, match="NaN or infinite coordinates.*'s2'"):
        validate_st(a)


def test_validate_spots_outside_image():
    a = _tiny_adata()
    with pytest.raises(
        SpatialDataError, match="2 of 4 spot centres.*outside the 20 x 50"
    ):
        validate_st(a, image_size=(20, 50))


def test_validate_duplicate_ids():
    a = _tiny_adata()
    a.obs_names = ["s0", "s1", "s1", "s3"]
    with pytest.raises(SpatialDataError, match="duplicate spot id.*'s1'"):
        validate_st(a)


@pytest.mark.parametrize(("value", "match"), [(-1.0, "negative"), (np.nan, "NaN")])
def test_validate_bad_counts(value, match):
    a = _tiny_adata()
    x = a.X.toarray()
    x[1, 1] = value
    a.X = sp.csr_matrix(x)
    with pytest.raises(SpatialDataError, match=match):
        validate_st(a)


def _write_legacy(tmp_path, counts: pd.DataFrame, spots: pd.DataFrame):
    counts.to_csv(tmp_path / "c.tsv", sep="\t")
    spots.to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    return tmp_path / "c.tsv", tmp_path / "s.tsv"


def test_legacy_no_common_ids(tmp_path):
    counts, spots = legacy_tables()
    spots["x"] += 100
    c, s = _write_legacy(tmp_path, counts, spots)
    with pytest.raises(SpatialDataError, match="share no spot id.*same section"):
        read_st("legacy-st", counts=c, spots=s)


def test_legacy_duplicate_ids(tmp_path):
    counts, spots = legacy_tables()
    c, s = _write_legacy(tmp_path, pd.concat([counts, counts.iloc[:1]]), spots)
    with pytest.raises(SpatialDataError, match="duplicate spot id '3x4'"):
        read_st("legacy-st", counts=c, spots=s)
    c, s = _write_legacy(tmp_path, counts, pd.concat([spots, spots.iloc[:1]]))
    with pytest.raises(
        SpatialDataError, match="duplicate spot id '3x4' in the spot table"
    ):
        read_st("legacy-st", counts=c, spots=s)


def test_legacy_negative_and_nan_counts(tmp_path):
    counts, spots = legacy_tables()
    counts.iloc[2, 1] = -3
    c, s = _write_legacy(tmp_path, counts, spots)
    with pytest.raises(SpatialDataError, match="negative"):
        read_st("legacy-st", counts=c, spots=s)
    counts.iloc[2, 1] = np.nan
    c, s = _write_legacy(tmp_path, counts, spots)
    with pytest.raises(SpatialDataError, match="NaN"):
        read_st("legacy-st", counts=c, spots=s)


def test_legacy_missing_columns(tmp_path):
    counts, spots = legacy_tables()
    c, s = _write_legacy(tmp_path, counts, spots.drop(columns=["pixel_y"]))
    with pytest.raises(SpatialDataError, match="lacks column.*pixel_y"):
        read_st("legacy-st", counts=c, spots=s)


def test_legacy_truncated_gzip(her2st_dir, tmp_path):
    counts, spots = _legacy(her2st_dir, "C2")
    data = counts.read_bytes()
    (tmp_path / "cut.tsv.gz").write_bytes(data[: len(data) // 3])
    with pytest.raises(SpatialDataError, match="truncated"):
        read_st("legacy-st", counts=tmp_path / "cut.tsv.gz", spots=spots)


def test_truncated_h5ad(shared_data, tmp_path):
    data = (shared_data / "squidpy_visium_crop" / "test_data.h5ad").read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(data[: len(data) // 2])
    with pytest.raises(SpatialDataError, match="truncated"):
        read_st("h5ad", tmp_path / "cut.h5ad", image=tmp_path / "cut.h5ad")


def test_h5ad_without_spatial(tmp_path):
    a = _tiny_adata()
    del a.obsm["spatial"]
    a.write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(SpatialDataError, match=r"obsm\['spatial'\] is missing"):
        read_st("h5ad", tmp_path / "a.h5ad", image=tmp_path / "a.h5ad")


def test_spaceranger_missing_scalefactors_and_truncated_matrix(shared_data, tmp_path):
    root = tmp_path / "outs"
    shutil.copytree(shared_data / "visium_scanpy_tiny", root)
    (root / "spatial" / "scalefactors_json.json").unlink()
    with pytest.raises(
        SpatialDataError, match="scalefactors_json.json is missing.*copy"
    ):
        read_st("visium", tmp_path)  # the parent of outs/ works too
    shutil.copy(
        shared_data / "visium_scanpy_tiny" / "spatial" / "scalefactors_json.json",
        root / "spatial",
    )
    h5 = root / "filtered_feature_bc_matrix.h5"
    data = h5.read_bytes()
    h5.write_bytes(data[: len(data) // 2])
    with pytest.raises(SpatialDataError, match="truncated or corrupt"):
        read_st("visium", root)


def test_unknown_mpp_when_nothing_estimates_it(tmp_path):
    a = _tiny_adata()
    a.write_h5ad(tmp_path / "a.h5ad")
    with gzip.open(tmp_path / "unused.gz", "wb") as fh:
        fh.write(b"")
    st = read_st("h5ad", tmp_path / "a.h5ad", image=tmp_path / "unused.gz")
    assert st.st_technology is None  # no uns['spatial'], no array grid
    with pytest.raises(MppUnknownError, match="--mpp UM"):
        resolve_mpp(st, None)
    assert resolve_mpp(st, None, mpp=0.5)[:2] == (0.5, "user")
