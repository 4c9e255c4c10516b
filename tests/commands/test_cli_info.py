"""`napari-seal info PATH [--json]` on slides and samples (DESIGN 5), and the bundled
her2st sample it describes."""

from __future__ import annotations

import json
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from napari_seal.cli import main
from napari_seal.io.hest import bundled_sample_path, load_sample

KEYS = {"kind", "name", "mpp", "mpp_source", "width_px", "height_px", "levels"}
SAMPLE_KEYS = KEYS | {"n_spots", "n_genes", "spot_diameter_um"}


def _info(capsys, *argv):
    rc = main(["info", *map(str, argv), "--json"])
    captured = capsys.readouterr()
    assert rc == 0
    # warnings reach stderr as single lines; stdout is exactly one JSON object
    assert all(
        x.startswith("napari-seal: warning: ") for x in captured.err.splitlines()
    )
    return json.loads(captured.out)


def test_info_bundled_sample(capsys):
    d = _info(capsys, bundled_sample_path())
    assert set(d) >= SAMPLE_KEYS
    assert d["kind"] == "sample"
    assert d["name"] == "her2st_C2"
    assert d["mpp_source"] == "estimated"
    assert 0.68 <= d["mpp"] <= 0.70
    assert (d["width_px"], d["height_px"]) == (9274, 9911)
    assert d["levels"] >= 4
    assert (d["n_spots"], d["n_genes"], d["spot_diameter_um"]) == (187, 15706, 100.0)


def test_info_slide_inside_the_sample(capsys):
    tif = bundled_sample_path() / "wsis" / "her2st_C2.tif"
    d = _info(capsys, tif)
    assert set(d) >= KEYS
    assert d["kind"] == "slide"
    assert d["mpp_source"] == "metadata"
    assert d["mpp"] == pytest.approx(0.689, abs=1e-3)
    assert (d["width_px"], d["height_px"]) == (9274, 9911)
    assert "n_spots" not in d
    assert main(["info", str(tif)]) == 0
    text = capsys.readouterr().out
    assert "kind: slide" in text
    assert "width_px: 9274" in text


def test_info_flat_image_without_pixel_size(tmp_path, capsys):
    Image.fromarray(np.full((300, 500, 3), 220, np.uint8)).save(tmp_path / "he.jpg")
    d = _info(capsys, tmp_path / "he.jpg")
    assert (d["kind"], d["mpp"], d["mpp_source"]) == ("slide", None, "unknown")
    assert (d["width_px"], d["height_px"]) == (500, 300)
    d = _info(capsys, tmp_path / "he.jpg", "--mpp", "0.5")
    assert (d["mpp"], d["mpp_source"]) == (0.5, "user")


def test_info_spaceranger_and_h5ad(shared_data, tmp_path, capsys):
    d = _info(capsys, shared_data / "visium_scanpy_tiny")
    assert set(d) >= SAMPLE_KEYS
    assert (d["n_spots"], d["n_genes"], d["spot_diameter_um"]) == (100, 100, 55.0)
    assert (d["width_px"], d["height_px"]) == (600, 600)  # the lowres image is used
    assert d["mpp_source"] == "estimated"
    root = shared_data / "squidpy_visium_crop"
    d = _info(capsys, root / "test_data.h5ad")
    assert (d["kind"], d["n_spots"], d["n_genes"]) == ("sample", 49, 1999)
    assert d["width_px"] is None
    assert d["image"] is None
    # with an image reference (scanpy's source_image_path, relative to the file)
    a = ad.read_h5ad(root / "test_data.h5ad")
    lib = next(iter(a.uns["spatial"]))
    a.uns["spatial"][lib]["metadata"]["source_image_path"] = "img.jpg"
    a.write_h5ad(tmp_path / "ref.h5ad")
    shutil.copy(root / "test_img.jpg", tmp_path / "img.jpg")
    d = _info(capsys, tmp_path / "ref.h5ad")
    assert (d["width_px"], d["height_px"]) == (950, 1717)
    assert 0.65 < d["mpp"] < 0.8
    assert d["mpp_source"] == "estimated"


def test_info_bad_paths_exit_2(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    for path in (tmp_path / "missing.svs", tmp_path / "notes.txt", tmp_path):
        assert main(["info", str(path), "--json"]) == 2
        captured = capsys.readouterr()
        lines = [x for x in captured.err.splitlines() if x.strip()]
        assert len(lines) == 1
        assert lines[0].startswith("napari-seal: error:")
        assert captured.out == ""


def test_bundled_sample_is_real_her2st_c2(capsys):
    root = bundled_sample_path()
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 15 * 2**20
    source = (root / "SOURCE.md").read_text()
    for needle in (
        "Andersson",
        "Nat Commun 12, 6012",
        "CC BY 4.0",
        "85df7411b987a7dec3feff9718b869a7a82091ec",
    ):
        assert needle in source
    s = load_sample(root)
    assert (s.name, s.n_spots, s.n_genes) == ("her2st_C2", 187, 15706)
    assert s.mpp_source == "estimated"
    assert 0.685 <= s.mpp <= 0.690
    assert s.adata.obs_names[0].count("x") == 1  # legacy ids "XxY"
    assert np.array_equal(s.adata.X.data, np.round(s.adata.X.data))  # raw counts
    xy = s.spots_xy
    on = np.mean([s.slide.read_region(int(x) - 30, int(y) - 30, 60, 60) for x, y in xy])
    assert on < s.slide.read_region(0, 0, 300, 300).mean() - 20  # spots on tissue


def test_bundled_sample_matches_shared_c2(her2st_dir):
    s = load_sample(bundled_sample_path())
    raw = pd.read_csv(her2st_dir / "ST-cnts" / "C2.tsv.gz", sep="\t", index_col=0)
    spots = pd.read_csv(her2st_dir / "ST-spotfiles" / "C2_selection.tsv", sep="\t")
    assert sorted(s.adata.obs_names) == sorted(raw.index)
    assert list(s.adata.var_names) == list(raw.columns)
    np.testing.assert_array_equal(
        s.adata.X.toarray(), raw.loc[s.adata.obs_names].to_numpy()
    )
    spots.index = [f"{x}x{y}" for x, y in zip(spots.x, spots.y, strict=True)]
    np.testing.assert_allclose(
        s.spots_xy, spots.loc[s.adata.obs_names, ["pixel_x", "pixel_y"]].to_numpy()
    )


def test_info_refuses_nan_coordinates_like_import(tmp_path, capsys):
    """`info` validates its input as `import` does: NaN/inf spot coordinates exit 2
    with the fix-it line (it used to print the JSON and exit 0)."""
    import anndata as ad
    import numpy as np

    from napari_seal.cli import main

    a = ad.AnnData(np.ones((4, 3), dtype="float32"))
    a.obsm["spatial"] = np.array([[1, 2], [np.nan, 3], [4, np.inf], [5, 6]], float)
    path = tmp_path / "nan.h5ad"
    a.write_h5ad(path)
    before = path.read_bytes()
    assert main(["info", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "NaN or infinite coordinates" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert path.read_bytes() == before
