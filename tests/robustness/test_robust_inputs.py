"""Bad input, systematically (issue 7): one test or parametrized case per row of
``docs/robustness.md`` (data readers: slides, h5ad, legacy ST, Space Ranger, HEST; the
model, store, gene-list and CLI rows are in ``test_robust_inputs_models.py``).

Each case feeds a damaged or hostile input to the reader a user would hit, asserts the
typed :class:`~napari_seal.errors.SealError` subclass and a key phrase of its fix-it
message, and checks that the input files are byte-for-byte unchanged afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from robust_helpers import (
    HUGE_HEADERS_SCRIPT,
    digest,
    legacy_tables,
    refused,
    writable_copy,
)

from napari_seal.errors import (
    BadInputError,
    SlideReadError,
    SpatialDataError,
)
from napari_seal.io.convert import open_st_path
from napari_seal.io.open import open_path
from napari_seal.io.slide.core import open_slide
from napari_seal.io.slide.writer import write_pyramidal_tiff
from napari_seal.io.st.read import read_st
from napari_seal.testing import synthetic_he_image


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return synthetic_he_image(96, 128, seed=3)


@pytest.fixture(scope="module")
def tiny_tiff(tmp_path_factory, rgb) -> Path:
    """A 128 x 96 JPEG-tiled pyramidal TIFF, 32 px tiles (4 x 3 tiles at level 0)."""
    return write_pyramidal_tiff(
        tmp_path_factory.mktemp("tif") / "good.tif", rgb, mpp=0.5, tile_px=32
    )


def patch_tag(src: Path, dst: Path, tag_name: str, value: int) -> Path:
    """Copy ``src`` with the first page's ``tag_name`` overwritten in place."""
    with tifffile.TiffFile(src) as tif:
        tag = tif.pages[0].tags[tag_name]
        offset, dtype = tag.valueoffset, tag.dtype
    fmt = {3: "<H", 4: "<I", 16: "<Q"}[int(dtype)]
    data = bytearray(src.read_bytes())
    data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    dst.write_bytes(bytes(data))
    return dst


# -- slides ------------------------------------------------------------------


def test_tiff_damaged_middle_tile_fails_on_read(tiny_tiff, tmp_path):
    """Open checks the first and last tile only; a damaged tile in between is a
    SlideReadError when read, not a codec exception (was: raw Jpeg8Error)."""
    with tifffile.TiffFile(tiny_tiff) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[5], page.databytecounts[5]
    data = bytearray(tiny_tiff.read_bytes())
    data[offset : offset + count] = bytes(range(256)) * (count // 256) + bytes(
        count % 256
    )
    bad = tmp_path / "midtile.tif"
    bad.write_bytes(bytes(data))
    slide = open_slide(bad)
    refused(lambda: slide.read_region(0, 0, 128, 96), SlideReadError, "corrupt", bad)
    refused(
        lambda: slide.levels[0].compute(), SlideReadError, "cannot decode tile", bad
    )


def test_tiff_zero_tile_length_header(tiny_tiff, tmp_path):
    """TileLength = 0 (was: ZeroDivisionError)."""
    bad = patch_tag(tiny_tiff, tmp_path / "zero.tif", "TileLength", 0)
    refused(lambda: open_slide(bad), SlideReadError, "corrupt|truncated", bad)


@pytest.mark.parametrize("suffix", [".tif", ".svs", ".ndpi", ".jpg", ".png"])
@pytest.mark.parametrize(
    "magic", [b"", b"II*\x00", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"]
)
def test_random_bytes_with_a_slide_extension(tmp_path, suffix, magic):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(magic + np.random.default_rng(len(magic)).bytes(4000))
    refused(
        lambda: open_path(path),
        BadInputError,
        "not a format napari-seal reads|corrupt|truncated|not a TIFF|OpenSlide",
        path,
    )


def test_png_cut_in_half(tmp_path, rgb):
    good = tmp_path / "good.png"
    Image.fromarray(rgb).save(good)
    bad = tmp_path / "cut.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    refused(
        lambda: open_slide(bad, cache_dir=tmp_path / "c"),
        SlideReadError,
        "truncated or corrupt",
        bad,
    )


def test_huge_dimensions_in_headers_fail_fast_without_allocating(tmp_path):
    """Headers claiming 10^6 x 10^6 (TIFF) or 100k / 65k / 30k px per side (PNG/JPEG) in
    tiny files: refused within seconds; peak RSS grows by < 200 MB. (was: a 632-byte
    JPEG claiming 30000 x 30000 px was decoded, 6.9 GB RSS and ~50 s)."""
    env = {**os.environ, "NAPARI_SEAL_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, "-c", HUGE_HEADERS_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert not [x for x in lines if x.startswith("OPENED")], out.stdout
    refusals = [x for x in lines if x.startswith("REFUSED")]
    assert len(refusals) == 7, out.stdout
    for line in refusals:
        assert float(line.split()[2]) < 10, line
    jump = float(next(x for x in lines if x.startswith("RSS_JUMP_MB")).split()[1])
    assert jump < 200, out.stdout


# -- AnnData .h5ad -----------------------------------------------------------


def _h5ad(path: Path, x, xy, **kw) -> Path:
    import anndata as ad

    a = ad.AnnData(X=x)
    for key, value in kw.items():
        setattr(a, key, value)
    if xy is not None:
        a.obsm["spatial"] = xy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def small_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "img.png"
    Image.fromarray(synthetic_he_image(200, 200, seed=0)).save(path)
    return path


N = 6
XY = np.c_[np.linspace(10, 150, N), np.linspace(10, 150, N)]
X = np.ones((N, 3), np.float32)


def test_h5ad_random_bytes(tmp_path, small_png):
    path = tmp_path / "random.h5ad"
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    refused(
        lambda: read_st("h5ad", path, image=small_png),
        SpatialDataError,
        "truncated or not an .h5ad",
        path,
    )


_H5AD_CASES = {
    "zero_spots": (np.zeros((0, 3), np.float32), np.zeros((0, 2)), "0 spots"),
    "zero_genes": (np.zeros((N, 0), np.float32), XY, "0 genes"),
    "inf_counts": (
        np.where(np.eye(N, 3) > 0, np.inf, 1).astype(np.float32),
        XY,
        "NaN or infinite.*finite non-negative",
    ),
    "inf_coords": (
        X,
        np.where(np.eye(N, 2) > 0, np.inf, XY),
        "NaN or infinite coordinates",
    ),
    "coords_outside": (X, -XY, "outside the 200 x 200 px image.*full-resolution"),
    "string_coords": (X, np.array([["a", "b"]] * N), "not numeric"),
    "one_column_coords": (X, XY[:, :1], r"shape \(6, 1\).*\(x, y\)"),
    "negative_counts": (-X, XY, "negative; import raw"),
}


@pytest.mark.parametrize("case", sorted(_H5AD_CASES))
def test_h5ad_bad_content(tmp_path, small_png, case):
    x, xy, match = _H5AD_CASES[case]
    path = _h5ad(tmp_path / f"{case}.h5ad", x, xy)
    refused(
        lambda: open_st_path(path, kind="h5ad", image=small_png, mpp=0.5),
        SpatialDataError,
        match,
        path,
        small_png,
    )


def test_h5ad_duplicate_spot_ids(tmp_path, small_png):
    import anndata as ad

    a = ad.AnnData(X=X)
    a.obs_names = ["s"] * N
    a.obsm["spatial"] = XY
    path = tmp_path / "dup.h5ad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.write_h5ad(path)
    refused(
        lambda: open_st_path(path, kind="h5ad", image=small_png, mpp=0.5),
        SpatialDataError,
        "duplicate spot id.*remove the duplicated rows",
        path,
    )


def test_h5ad_float16_and_string_counts(tmp_path, small_png):
    """float16 counts are read (was: scipy ValueError); text counts are refused."""
    path = _h5ad(tmp_path / "f16.h5ad", X.astype(np.float16), XY)
    st = read_st("h5ad", path, image=small_png)
    assert st.adata.X.dtype == np.float32
    from napari_seal.io.st.contract import build_adata

    with pytest.raises(SpatialDataError, match="not numbers"):
        build_adata(
            np.full((N, 3), "7"),
            obs_names=range(N),
            var=pd.DataFrame(index=["A", "B", "C"]),
            spatial_xy=XY,
        )


def test_h5ad_duplicate_gene_names_are_kept_and_renamed(tmp_path, small_png):
    import anndata as ad

    a = ad.AnnData(X=X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a.var_names = ["G", "G", "H"]
        a.obsm["spatial"] = XY
        path = tmp_path / "dupgenes.h5ad"
        a.write_h5ad(path)
    before = digest(path)
    with pytest.warns(UserWarning, match="appear more than once"):
        st = read_st("h5ad", path, image=small_png)
    assert list(st.adata.var_names) == ["G", "G-1", "H"]
    assert digest(path) == before


# -- legacy ST tables --------------------------------------------------------


def _legacy_case(name):
    c, s = legacy_tables(step_px=100.0)
    raw_c = raw_s = None
    if name == "string_counts":
        c["G1"] = c["G1"].astype(str) + "x"
    elif name == "inf_counts":
        c = c.astype(float)
        c.iloc[0, 0] = np.inf
    elif name == "counts_beyond_float32":
        c = c.astype(float) * 1e300
    elif name == "zero_genes":
        c = c.iloc[:, :0]
    elif name == "header_only":
        raw_c = b"\tG1\tG2\n"
    elif name == "binary_counts":
        raw_c = np.random.default_rng(1).bytes(500)
    elif name == "utf16_counts":
        raw_c = c.to_csv(sep="\t").encode("utf-16")
    elif name == "empty_counts_file":
        raw_c = b""
    elif name == "binary_spots":
        raw_s = np.random.default_rng(2).bytes(500)
    elif name == "float_array_coords":
        s["x"] = s["x"] + 0.5
    elif name == "huge_array_coords":
        s["x"] = 10**20
    elif name == "none_selected":
        s["selected"] = 0
    return c, s, raw_c, raw_s


_LEGACY = {
    "string_counts": "not numeric.*numbers only",
    "inf_counts": "NaN or infinite",
    "counts_beyond_float32": "beyond float32.*raw count",
    "zero_genes": "0 columns.*one column per gene",
    "header_only": "0 rows",
    "binary_counts": "cannot read the counts table.*not a tab/comma",
    "utf16_counts": "cannot read the counts table",
    "empty_counts_file": "cannot read the counts table",
    "binary_spots": "cannot read the spot table",
    "float_array_coords": "share no spot id.*same section",
    "huge_array_coords": "duplicate spot id '1e\\+20x4'",
    "none_selected": "share no spot id",
}


@pytest.mark.parametrize("case", sorted(_LEGACY))
def test_legacy_st_bad_tables(tmp_path, small_png, case):
    c, s, raw_c, raw_s = _legacy_case(case)
    cp, sp_ = tmp_path / "counts.tsv", tmp_path / "spots.tsv"
    cp.write_bytes(raw_c) if raw_c is not None else c.to_csv(cp, sep="\t")
    sp_.write_bytes(raw_s) if raw_s is not None else s.to_csv(
        sp_, sep="\t", index=False
    )
    refused(
        lambda: read_st("legacy-st", counts=cp, spots=sp_, image=small_png),
        SpatialDataError,
        _LEGACY[case],
        cp,
        sp_,
    )


@pytest.mark.parametrize("how", ["nan", "text"])
def test_legacy_st_bad_pixel_coordinates(tmp_path, how):
    from napari_seal.io.convert import import_sample

    c, s = legacy_tables(step_px=100.0)
    s["pixel_x"] = s["pixel_x"].astype(object)
    s.loc[0, "pixel_x"] = np.nan if how == "nan" else "abc"
    cp, sp_ = tmp_path / "counts.tsv", tmp_path / "spots.tsv"
    c.to_csv(cp, sep="\t")
    s.to_csv(sp_, sep="\t", index=False)
    img = tmp_path / "img.png"
    Image.fromarray(synthetic_he_image(800, 800, seed=1)).save(img)
    refused(
        lambda: import_sample(
            "legacy-st", [], counts=cp, spots=sp_, image=img, out=tmp_path / "out"
        ),
        SpatialDataError,
        "NaN or infinite coordinates.*fix their pixel positions",
        cp,
        sp_,
        img,
    )
    assert not (tmp_path / "out").exists()


# -- Space Ranger folders ----------------------------------------------------


def _sf(text):
    return lambda d: (d / "spatial" / "scalefactors_json.json").write_text(text)


def _pos(fn):
    def mutate(d):
        p = d / "spatial" / "tissue_positions_list.csv"
        df = pd.read_csv(p, header=None)
        out = fn(df)
        if isinstance(out, bytes):
            p.write_bytes(out)
        else:
            out.to_csv(p, header=False, index=False)

    return mutate


def _parquet_garbage(d):
    (d / "spatial" / "tissue_positions_list.csv").unlink()
    (d / "spatial" / "tissue_positions.parquet").write_bytes(b"PAR1" + bytes(200))


M = "filtered_feature_bc_matrix.h5"
# fmt: off
_VISIUM = {
    "scalefactors_list": (_sf("[1, 2]"), "cannot parse.*scalefactors"),
    "scalefactors_text_value": (_sf('{"tissue_hires_scalef": "abc"}'),
                                "cannot parse.*restore the scalefactors"),
    "scalefactors_nested": (_sf('{"tissue_hires_scalef": {"a": 1}}'), "cannot parse"),
    "scalefactors_nan_inf": (
        _sf('{"tissue_hires_scalef": NaN, "tissue_lowres_scalef": Infinity}'),
        "not a positive number.*scalefactors_json.json"),
    "scalefactors_empty": (_sf(""), "cannot parse"),
    "positions_binary": (_pos(lambda df: np.random.default_rng(3).bytes(300)),
                         "cannot read.*truncated or corrupt"),
    "positions_duplicated": (_pos(lambda df: pd.concat([df, df.iloc[:3]])),
                             "3 barcode\\(s\\) twice"),
    "positions_nan": (_pos(lambda df: df.assign(px=np.nan).iloc[:, [0, 1, 2, 3, 4, 6]]),
                      "NaN or infinite coordinates"),
    "positions_outside": (_pos(lambda df: df.assign(x=df[4] * 1000)
                               .iloc[:, [0, 1, 2, 3, 6, 5]]), "outside the"),
    "positions_parquet_garbage": (_parquet_garbage, "cannot read.*parquet"),
    "matrix_random_bytes": (lambda d: (d / M).write_bytes(bytes(1000)),
                            "count matrix.*truncated or corrupt"),
}
# fmt: on


@pytest.mark.parametrize("case", sorted(_VISIUM))
def test_spaceranger_bad_folder(shared_data, tmp_path, case):
    mutate, match = _VISIUM[case]
    root = writable_copy(shared_data / "visium_scanpy_tiny", tmp_path / "outs")
    mutate(root)
    refused(lambda: open_path(root), SpatialDataError, match, root)


# -- HEST folders ------------------------------------------------------------


@pytest.fixture
def hest_copy(tmp_path) -> Path:
    from napari_seal.io.hest import bundled_sample_path

    return writable_copy(bundled_sample_path(), tmp_path / "hest")


META, ST, WSI = "metadata/her2st_C2.json", "st/her2st_C2.h5ad", "wsis/her2st_C2.tif"
# fmt: off
_HEST = {
    "metadata_binary": (lambda d: (d / META).write_bytes(b"\xff\xfe" + bytes(100)),
                        SpatialDataError, "cannot parse.*metadata"),
    "metadata_not_object": (lambda d: (d / META).write_text("[1, 2]"),
                            SpatialDataError, "not a JSON object"),
    "st_missing": (lambda d: (d / ST).unlink(), SpatialDataError,
                   "holds no .h5ad; the HEST folder is incomplete"),
    "st_random_bytes": (lambda d: (d / ST).write_bytes(bytes(2000)), SpatialDataError,
                        "truncated or corrupt"),
    "wsi_missing": (lambda d: (d / WSI).unlink(), SpatialDataError,
                    "no slide wsis/her2st_C2.tif"),
    "wsi_cut": (lambda d: (d / WSI).write_bytes((d / WSI).read_bytes()[:20000]),
                SlideReadError, "truncated"),
    "two_samples": (lambda d: shutil.copy(d / ST, d / "st" / "other.h5ad"),
                    BadInputError, "holds 2 samples; choose one with --id"),
}
# fmt: on


@pytest.mark.parametrize("case", sorted(_HEST))
def test_hest_bad_folder(hest_copy, case):
    mutate, exc, match = _HEST[case]
    mutate(hest_copy)
    refused(lambda: open_path(hest_copy), exc, match, hest_copy)


def test_metadata_json_is_read_only(hest_copy):
    """A HEST metadata file with absurd values is refused, not rewritten."""
    meta = hest_copy / "metadata" / "her2st_C2.json"
    meta.write_text(
        json.dumps({"pixel_size_um_estimated": 1e308, "spot_diameter": 1e308})
    )
    refused(
        lambda: open_path(hest_copy), BadInputError, "positive pixel size", hest_copy
    )
