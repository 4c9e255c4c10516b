"""`napari-seal import` to the HEST layout: real her2st, Visium and h5ad data,
round trips, atomic output, bad input (exit 2, one line, inputs untouched)."""

from __future__ import annotations

import hashlib
import json
import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from PIL import Image

from napari_seal.cli import main
from napari_seal.errors import BadInputError, OutputPathError
from napari_seal.io.convert import import_sample
from napari_seal.io.hest import load_sample
from napari_seal.io.slide.core import open_slide


def _sha(paths):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _files(*roots):
    out = []
    for r in roots:
        out += [r] if r.is_file() else sorted(p for p in r.rglob("*") if p.is_file())
    return out


def _stderr_lines(capsys):
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.strip()]


# ---------------------------------------------------------------- real data


def test_import_legacy_st_her2st_c3_cli(her2st_dir, tmp_path, capsys):
    counts = her2st_dir / "ST-cnts" / "C3.tsv.gz"
    spots = her2st_dir / "ST-spotfiles" / "C3_selection.tsv"
    image = her2st_dir / "ST-imgs" / "C" / "C3" / "5714_HE_BT_D1.jpg"
    before = _sha([counts, spots, image])
    out = tmp_path / "C3"
    rc = main(
        [
            "import",
            "legacy-st",
            "--counts",
            str(counts),
            "--spots",
            str(spots),
            "--image",
            str(image),
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert captured.out.strip() == str(out)
    warn = [line for line in captured.err.splitlines() if line.strip()]
    assert len(warn) == 1
    assert "2 of 182 selected spots have no counts row" in warn[0]
    assert "keeping 180 spots" in warn[0]
    assert _sha([counts, spots, image]) == before  # inputs never modified

    assert sorted(p.name for p in out.iterdir()) == ["metadata", "st", "wsis"]
    meta = json.loads((out / "metadata" / "C3.json").read_text())
    assert meta["id"] == "C3"
    assert meta["st_technology"] == "Spatial Transcriptomics"
    assert meta["spot_diameter"] == 100.0
    assert meta["inter_spot_dist"] == 200.0
    assert 0.68 <= meta["pixel_size_um_estimated"] <= 0.70
    assert "pixel_size_um_embedded" not in meta  # the JPEG states no pixel size
    assert meta["napari_seal_version"]

    s = load_sample(out)
    assert (s.name, s.n_spots, s.n_genes) == ("C3", 180, 15821)
    assert s.mpp_source == "estimated"
    assert 0.68 <= s.mpp <= 0.70
    assert (s.slide.width_px, s.slide.height_px) == (9270, 9936)  # full resolution
    assert s.slide.n_levels >= 4
    # the TIFF embeds the pixel size
    assert open_slide(out / "wsis" / "C3.tif").mpp == pytest.approx(s.mpp, rel=1e-6)
    raw = pd.read_csv(counts, sep="\t", index_col=0)
    np.testing.assert_array_equal(
        s.adata.X.toarray(), raw.loc[s.adata.obs_names].to_numpy()
    )
    assert s.adata.uns["napari_seal"]["mpp_source"] == "estimated"
    # level 0 is the source image (re-encoded), not a resampled copy
    src = open_slide(image)
    a = s.slide.read_region(3000, 4000, 256, 256).astype(float)
    b = src.read_region(3000, 4000, 256, 256).astype(float)
    assert np.abs(a - b).mean() < 3.0
    # spots sit on tissue: darker than the slide's background
    xy = s.spots_xy
    patches = [
        s.slide.read_region(int(x) - 20, int(y) - 20, 40, 40) for x, y in xy[:40]
    ]
    corner = s.slide.read_region(0, 0, 200, 200)
    assert np.mean(patches) < corner.mean() - 20


def test_import_h5ad_fixture_then_hest_round_trip(shared_data, tmp_path, capsys):
    root = shared_data / "squidpy_visium_crop"
    before = _sha(_files(root))
    out = tmp_path / "crop"
    rc = main(
        [
            "import",
            "h5ad",
            str(root / "test_data.h5ad"),
            "--image",
            str(root / "test_img.jpg"),
            "--out",
            str(out),
            "--id",
            "crop",
        ]
    )
    assert rc == 0
    assert any("not integers" in line for line in _stderr_lines(capsys))
    s = load_sample(out)
    src = ad.read_h5ad(root / "test_data.h5ad")
    assert (s.n_spots, s.n_genes) == (49, 1999)
    assert list(s.adata.obs_names) == list(src.obs_names)
    np.testing.assert_allclose(s.adata.X.toarray(), src.X.toarray(), rtol=1e-6)
    np.testing.assert_allclose(s.spots_xy, src.obsm["spatial"])
    assert s.mpp_source == "estimated"
    assert 0.65 < s.mpp < 0.8
    assert s.spot_diameter_um == 55.0
    assert s.st_technology == "Visium"

    again = tmp_path / "again"
    assert main(["import", "hest", str(out), "--out", str(again)]) == 0
    s2 = load_sample(again)
    assert s2.name == "crop"
    assert list(s2.adata.obs_names) == list(s.adata.obs_names)
    assert (s2.adata.X != s.adata.X).nnz == 0
    np.testing.assert_array_equal(s2.spots_xy, s.spots_xy)
    assert (s2.mpp, s2.mpp_source, s2.spot_diameter_um) == (s.mpp, s.mpp_source, 55.0)
    assert list(s2.adata.var_names) == list(s.adata.var_names)
    diff = np.abs(
        s2.slide.read_region(0, 0, 950, 1717).astype(float)
        - s.slide.read_region(0, 0, 950, 1717).astype(float)
    )
    assert diff.mean() < 2.0
    assert _sha(_files(root)) == before

    user = tmp_path / "user"
    import_sample(
        "h5ad",
        [root / "test_data.h5ad"],
        image=root / "test_img.jpg",
        out=user,
        mpp=0.7,
    )
    s3 = load_sample(user)
    meta = json.loads(next((user / "metadata").glob("*.json")).read_text())
    assert (s3.mpp, s3.mpp_source) == (0.7, "user")
    assert meta["pixel_size_um_embedded"] == 0.7
    assert open_slide(next((user / "wsis").glob("*.tif"))).mpp == pytest.approx(0.7)
    assert load_sample(user, mpp=0.5).mpp_source == "user"


def test_import_visium_fixture(shared_data, tmp_path, capsys):
    root = shared_data / "visium_scanpy_tiny"
    before = _sha(_files(root))
    out = tmp_path / "vis"
    assert main(["import", "visium", str(root), "--out", str(out)]) == 0
    lines = _stderr_lines(capsys)
    assert any("blank placeholder" in line for line in lines)
    assert any("keeping 100 spots" in line for line in lines)
    s = load_sample(out)
    meta = json.loads((out / "metadata" / "visium_scanpy_tiny.json").read_text())
    scale = meta["napari_seal"]["image_scale"]
    assert scale == pytest.approx(0.045004502)
    assert (s.n_spots, s.n_genes) == (100, 100)
    assert (s.slide.width_px, s.slide.height_px) == (600, 600)
    assert 0.6 < s.mpp * scale < 0.8  # the full-resolution pixel size
    assert s.spot_diameter_um == 55.0
    assert s.inter_spot_dist_um == 100.0
    assert {"array_row", "array_col"} <= set(s.adata.obs.columns)
    assert float(s.adata.X.sum()) == pytest.approx(
        float(
            __import__("scanpy")
            .read_10x_h5(root / "filtered_feature_bc_matrix.h5")
            .X.sum()
        )
    )
    assert _sha(_files(root)) == before


# ---------------------------------------------------------------- small synthetic set


@pytest.fixture
def legacy(tmp_path):
    """A tiny valid legacy-ST sample (3 x 3 spots, 290 px pitch, 1000 x 1000 image)."""
    d = tmp_path / "in"
    d.mkdir()
    ids = [(x, y) for x in range(1, 4) for y in range(1, 4)]
    counts = pd.DataFrame(
        np.arange(len(ids) * 3).reshape(-1, 3) % 5,
        columns=["ERBB2", "KRT19", "CD74"],
        index=[f"{x}x{y}" for x, y in ids],
    )
    spots = pd.DataFrame(
        {
            "x": [i[0] for i in ids],
            "y": [i[1] for i in ids],
            "pixel_x": [100.0 + (i[0] - 1) * 290 for i in ids],
            "pixel_y": [120.0 + (i[1] - 1) * 290 for i in ids],
            "selected": 1,
        }
    )
    img = np.full((1000, 1000, 3), 235, np.uint8)
    img[50:800, 50:800] = (180, 90, 160)
    Image.fromarray(img).save(d / "he.jpg", quality=90)

    def write(counts=counts, spots=spots):
        counts.to_csv(d / "counts.tsv", sep="\t")
        spots.to_csv(d / "spots.tsv", sep="\t", index=False)
        return [
            "--counts",
            str(d / "counts.tsv"),
            "--spots",
            str(d / "spots.tsv"),
            "--image",
            str(d / "he.jpg"),
        ]

    return {"dir": d, "counts": counts, "spots": spots, "write": write}


def test_legacy_synthetic_imports_with_estimated_mpp(legacy, tmp_path):
    out = tmp_path / "ok"
    out.mkdir()  # an empty folder is accepted
    assert main(["import", "legacy-st", *legacy["write"](), "--out", str(out)]) == 0
    s = load_sample(out)
    assert s.mpp == pytest.approx(200 / 290)
    assert s.mpp_source == "estimated"
    assert (
        main(
            [
                "import",
                "legacy-st",
                *legacy["write"](),
                "--out",
                str(tmp_path / "b"),
                "--array-pitch-um",
                "100",
                "--spot-diameter-um",
                "60",
            ]
        )
        == 0
    )
    s = load_sample(tmp_path / "b")
    assert s.mpp == pytest.approx(100 / 290)
    assert s.spot_diameter_um == 60.0


def _bad_case(legacy, case):
    """Write the inputs of one bad case; return (flags, expected message part)."""
    c, s_ = legacy["counts"], legacy["spots"]
    w = legacy["write"]
    if case == "no common id":
        return w(spots=s_.assign(x=s_.x + 50)), "share no spot id"
    if case == "outside image":
        return w(spots=s_.assign(pixel_x=s_.pixel_x + 600)), "outside the 1000 x 1000"
    if case == "nan coordinates":
        return (
            w(spots=s_.assign(pixel_y=s_.pixel_y.where(s_.index != 4))),
            "NaN or infinite coordinates",
        )
    if case == "duplicate id":
        return w(counts=pd.concat([c, c.iloc[[2]]])), "duplicate spot id"
    return w(counts=c.assign(KRT19=-c.KRT19 - 1)), "negative"


@pytest.mark.parametrize(
    "case",
    [
        "no common id",
        "outside image",
        "nan coordinates",
        "duplicate id",
        "negative counts",
    ],
)
def test_bad_legacy_input_exits_2_with_one_line(legacy, tmp_path, capsys, case):
    flags, match = _bad_case(legacy, case)
    before = _sha(_files(legacy["dir"]))
    out = tmp_path / "out"
    assert main(["import", "legacy-st", *flags, "--out", str(out)]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("napari-seal: error: ")
    assert match in lines[0]
    assert "Traceback" not in lines[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".out.tmp-*"))
    assert _sha(_files(legacy["dir"])) == before


def test_bad_image_unknown_mpp_and_flags(legacy, tmp_path, capsys):
    d = legacy["dir"]
    flags = legacy["write"]()
    data = (d / "he.jpg").read_bytes()
    (d / "cut.jpg").write_bytes(data[: len(data) // 4])
    bad = flags[:-1] + [str(d / "cut.jpg")]
    cases = [
        (["import", "legacy-st", *bad], None),  # truncated image
        (["import", "legacy-st", *flags[2:]], "--counts"),
        (
            ["import", "legacy-st", "--counts", str(d / "nope.tsv"), *flags[2:]],
            "does not exist",
        ),
        (["import", "h5ad", str(d / "x.h5ad")], "--image"),
        (["import", "visium", str(d), str(d)], "exactly one SOURCE"),
    ]
    # an h5ad with no technology hint and a PNG without a pixel size: unknown mpp
    a = ad.AnnData(sp.csr_matrix(np.ones((3, 2), np.float32)))
    a.obs_names = ["a", "b", "c"]
    a.obsm["spatial"] = np.array([[10.0, 10.0], [50.0, 10.0], [10.0, 50.0]])
    a.write_h5ad(d / "plain.h5ad")
    Image.fromarray(np.full((100, 100, 3), 200, np.uint8)).save(d / "img.png")
    cases.append(
        (
            ["import", "h5ad", str(d / "plain.h5ad"), "--image", str(d / "img.png")],
            "--mpp UM",
        )
    )
    del a.obsm["spatial"]
    a.write_h5ad(d / "nospatial.h5ad")
    cases.append(
        (
            [
                "import",
                "h5ad",
                str(d / "nospatial.h5ad"),
                "--image",
                str(d / "img.png"),
            ],
            "obsm['spatial'] is missing",
        )
    )
    before = _sha(_files(d))
    for i, (argv, match) in enumerate(cases):
        out = tmp_path / f"o{i}"
        assert main([*argv, "--out", str(out)]) == 2, argv
        lines = _stderr_lines(capsys)
        assert len(lines) == 1, (argv, lines)
        assert match is None or match in lines[0], (argv, lines)
        assert not out.exists()
    assert _sha(_files(d)) == before
    # with --mpp the same h5ad + PNG import
    ok = tmp_path / "ok"
    assert (
        main(
            [
                "import",
                "h5ad",
                str(d / "plain.h5ad"),
                "--image",
                str(d / "img.png"),
                "--mpp",
                "0.5",
                "--spot-diameter-um",
                "55",
                "--out",
                str(ok),
            ]
        )
        == 0
    )


def test_missing_scalefactors_cli(shared_data, tmp_path, capsys):
    root = tmp_path / "sr"
    shutil.copytree(shared_data / "visium_scanpy_tiny", root)
    (root / "spatial" / "scalefactors_json.json").unlink()
    assert main(["import", "visium", str(root), "--out", str(tmp_path / "o")]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1
    assert "scalefactors_json.json is missing" in lines[0]


def test_output_rules_and_atomicity(legacy, tmp_path, capsys, monkeypatch):
    flags = legacy["write"]()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    assert main(["import", "legacy-st", *flags, "--out", str(full)]) == 2
    lines = _stderr_lines(capsys)
    assert len(lines) == 1
    assert "not an empty folder" in lines[0]
    assert sorted(p.name for p in full.iterdir()) == ["keep.txt"]

    def boom(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", boom)
    out = tmp_path / "half"
    with pytest.raises(OutputPathError, match="No space left"):
        import_sample(
            "legacy-st", [], counts=flags[1], spots=flags[3], image=flags[5], out=out
        )
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_hest_folder_with_several_samples_needs_id(legacy, tmp_path, capsys):
    flags = legacy["write"]()
    one = tmp_path / "one"
    import_sample(
        "legacy-st",
        [],
        counts=flags[1],
        spots=flags[3],
        image=flags[5],
        out=one,
        sample_id="A",
    )
    root = tmp_path / "multi"
    shutil.copytree(one, root)
    for sub, ext in (("wsis", "tif"), ("st", "h5ad"), ("metadata", "json")):
        shutil.copy(root / sub / f"A.{ext}", root / sub / f"B.{ext}")
    assert main(["import", "hest", str(root), "--out", str(tmp_path / "x")]) == 2
    line = _stderr_lines(capsys)[0]
    assert "holds 2 samples" in line
    assert "--id" in line
    assert "A, B" in line
    assert (
        main(["import", "hest", str(root), "--id", "B", "--out", str(tmp_path / "y")])
        == 0
    )
    assert load_sample(tmp_path / "y").name == "B"
    with pytest.raises(BadInputError, match="not a plain name"):
        load_sample(root, sample_id="../A")


def _write_tiff(path, array, mpp):
    try:
        from napari_seal.io.slide.writer import write_pyramidal_tiff
    except ImportError:
        from napari_seal.io.slide.writer import write_pyramidal_tiff
    return write_pyramidal_tiff(path, array, mpp=mpp)


def test_slide_metadata_beats_estimate_and_mpp_beats_both(legacy, tmp_path, capsys):
    flags = legacy["write"]()
    rgb = np.asarray(Image.open(flags[5]).convert("RGB"))
    tif = _write_tiff(tmp_path / "he.tif", rgb, 0.5)
    flags = [*flags[:5], str(tif)]
    assert main(["import", "legacy-st", *flags, "--out", str(tmp_path / "m")]) == 0
    lines = _stderr_lines(capsys)
    assert any("differs from the spot-grid estimate" in x for x in lines)
    s = load_sample(tmp_path / "m")
    assert (s.mpp, s.mpp_source) == (pytest.approx(0.5), "metadata")
    meta = json.loads((tmp_path / "m" / "metadata" / "counts.json").read_text())
    assert meta["pixel_size_um_embedded"] == pytest.approx(0.5)
    assert meta["pixel_size_um_estimated"] == pytest.approx(200 / 290)
    out = tmp_path / "u"
    assert (
        main(["import", "legacy-st", *flags, "--mpp", "0.61", "--out", str(out)]) == 0
    )
    s = load_sample(out)
    assert (s.mpp, s.mpp_source) == (0.61, "user")


def test_hest_style_metadata_precedence(legacy, tmp_path):
    flags = legacy["write"]()
    out = tmp_path / "h"
    import_sample(
        "legacy-st",
        [],
        counts=flags[1],
        spots=flags[3],
        image=flags[5],
        out=out,
        sample_id="S",
    )
    path = out / "metadata" / "S.json"
    meta = json.loads(path.read_text())
    del meta["napari_seal"]  # as HEST-1k writes it
    meta["pixel_size_um_estimated"] = 0.7
    path.write_text(json.dumps(meta))
    s = load_sample(out)
    assert (s.mpp, s.mpp_source) == (0.7, "estimated")
    meta["pixel_size_um_embedded"] = 0.66
    path.write_text(json.dumps(meta))
    s = load_sample(out)
    assert (s.mpp, s.mpp_source) == (0.66, "metadata")
    assert load_sample(out / "st" / "S.h5ad").name == "S"  # a file inside the folder


@pytest.mark.slow
@pytest.mark.parametrize("sec", ["C2", "C4", "C5", "C6"])
def test_import_every_her2st_section(her2st_dir, tmp_path, sec):
    """Full-resolution import of the other sections (C3 runs in the fast suite)."""
    n_spots = {"C2": 187, "C4": 184, "C5": 181, "C6": 178}[sec]
    image = next((her2st_dir / "ST-imgs" / "C" / sec).glob("*.jpg"))
    out = import_sample(
        "legacy-st",
        [],
        counts=her2st_dir / "ST-cnts" / f"{sec}.tsv.gz",
        spots=her2st_dir / "ST-spotfiles" / f"{sec}_selection.tsv",
        image=image,
        out=tmp_path / sec,
    )
    s = load_sample(out)
    assert s.n_spots == n_spots
    assert s.mpp_source == "estimated"
    assert 0.68 <= s.mpp <= 0.70
    assert (s.slide.width_px, s.slide.height_px) == Image.open(image).size
