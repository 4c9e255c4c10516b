"""``napari-seal query`` and ``napari-seal lookup`` end to end on a tiny trained run.

The run is a real ``napari-seal train`` output (test-vit, two steps) on two small
synthetic samples; the queried sample is a HEST folder, so the commands go through
the same loaders, embedding store and run loader as for users.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from retrieval.test_retrieval_helpers import GENES, he_image, toy_sample

from napari_seal.cli import main

# the markers of GENES are always in a panel; with one HVG most of these are left out
EXTRA = ["TFF3", "MUCL1", "AZGP1", "SLC39A6"]
ALL = GENES + EXTRA


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from napari_seal.training.config import TrainConfig
    from napari_seal.training.trainer import train

    out = tmp_path_factory.mktemp("run") / "run"
    cfg = TrainConfig(
        encoder="test-vit",
        epochs=1,
        batch_size=8,
        max_steps=1,
        n_genes=1,
        precision="fp32",
    )
    train(
        [
            toy_sample(genes=ALL, seed=0, name="A"),
            toy_sample(genes=ALL, seed=1, name="B"),
        ],
        out=out,
        config=cfg,
    )
    return out


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    from napari_seal.io.hest import write_hest_sample

    s = toy_sample(genes=ALL, seed=4, name="C")
    out = tmp_path_factory.mktemp("sample") / "C"
    write_hest_sample(
        out,
        sample_id="C",
        adata=s.adata,
        image=he_image(seed=4),
        mpp=s.mpp,
        metadata={
            "pixel_size_um_embedded": s.mpp,
            "spot_diameter": 55.0,
            "inter_spot_dist": 100.0,
            "st_technology": "Visium",
        },
    )
    return out


def _err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("napari-seal: error:")
    return err[0]


def test_query_writes_scores_and_spot_scores(run_dir, sample_dir, tmp_path, capsys):
    import zarr

    from napari_seal.io.hest import load_sample
    from napari_seal.retrieval.gene_query import spot_scores
    from napari_seal.retrieval.results import read_scores

    out, spots = tmp_path / "q.zarr", tmp_path / "spots.csv"
    rc = main(
        [
            "query",
            str(sample_dir),
            "--run",
            str(run_dir),
            "--gene",
            "her2",
            "--gene",
            "GRB7:0.5",
            "--out",
            str(out),
            "--spot-scores",
            str(spots),
            "--top-q",
            "0.2",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    group = zarr.open_group(out, mode="r")
    n = group["scores"].shape[0]
    assert group["tile_ids"].shape == (n,)
    assert group["coords"].shape == (n, 2)
    attrs = dict(group.attrs)
    assert attrs["query"]["genes"] == ["ERBB2", "GRB7"]
    assert attrs["query"]["weights"] == [1.0, 0.5]
    assert attrs["route"] == "omics"
    assert attrs["run"] == str(run_dir.resolve())
    assert {"n_rows", "n_cols", "tile_px"} <= set(attrs["grid"])
    assert attrs["contour"]["n_tiles"] == int(np.ceil(0.2 * n))
    assert np.isfinite(group["scores"][:]).all()
    store = Path(attrs["store"])
    assert store.is_dir()
    assert store.suffix == ".zarr"
    # the CSV: header, one row per spot, ids exactly the sample's obs names
    sample = load_sample(sample_dir)
    rows = list(csv.reader(spots.open()))
    assert rows[0] == ["spot_id", "score"]
    assert [r[0] for r in rows[1:]] == list(sample.adata.obs_names)
    ids, want = spot_scores(sample, run_dir, "ERBB2,GRB7:0.5")
    np.testing.assert_allclose([float(r[1]) for r in rows[1:]], want, rtol=1e-5)
    # decoder route reuses the cached store (no second embedding)
    mtime = (store / "embeddings" / "zarr.json").stat().st_mtime_ns
    out2 = tmp_path / "q2.zarr"
    assert (
        main(
            [
                "query",
                str(sample_dir),
                "--run",
                str(run_dir),
                "--gene",
                "ERBB2",
                "--route",
                "decoder",
                "--out",
                str(out2),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (store / "embeddings" / "zarr.json").stat().st_mtime_ns == mtime
    dec = read_scores(out2)
    assert dec.route == "decoder"
    assert dec.store == str(store)
    first = read_scores(out)
    assert not np.allclose(dec.scores, first.scores)
    assert first.contrast
    assert "minus that of all training spots" in attrs["score"]
    out3 = tmp_path / "q3.zarr"
    rc = main(
        [
            "query",
            str(sample_dir),
            "--run",
            str(run_dir),
            "--gene",
            "her2",
            "--gene",
            "GRB7:0.5",
            "--no-contrast",
            "--out",
            str(out3),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    raw = read_scores(out3)
    assert not raw.contrast
    assert not np.allclose(raw.scores, first.scores)


def test_query_bad_input(run_dir, sample_dir, tmp_path, capsys):
    base = [
        "query",
        str(sample_dir),
        "--run",
        str(run_dir),
        "--out",
        str(tmp_path / "x.zarr"),
        "--device",
        "cpu",
    ]
    assert main([*base, "--gene", "ERBB9"]) == 2
    line = _err_line(capsys)
    assert "'ERBB9' is not a gene of this run or data" in line
    assert "ERBB2" in line
    assert main([*base]) == 2
    assert "names no gene" in _err_line(capsys)
    assert main([*base, "--gene", "ERBB2:x"]) == 2
    assert "is not a number" in _err_line(capsys)
    assert main([*base, "--gene", "ERBB2", "--top-q", "2"]) == 2
    assert "--top-q must be in (0, 1]" in _err_line(capsys)
    sig = tmp_path / "empty.tsv"
    sig.write_text("gene\tweight\n")
    assert main([*base, "--signature", str(sig)]) == 2
    assert "lists no gene" in _err_line(capsys)
    assert main([*base, "--gene", "ERBB2", "--store", str(sample_dir)]) == 2
    assert "not an embedding store" in _err_line(capsys)
    assert not (tmp_path / "x.zarr").exists()


def test_query_gene_outside_panel_says_how_to_retrain(
    run_dir, sample_dir, tmp_path, capsys
):
    from napari_seal.training.runs import load_run

    panel = set(load_run(run_dir).panel.genes)
    outside = next(g for g in EXTRA if g not in panel)
    rc = main(
        [
            "query",
            str(sample_dir),
            "--run",
            str(run_dir),
            "--gene",
            outside,
            "--out",
            str(tmp_path / "x.zarr"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 2
    line = _err_line(capsys)
    assert f"'{outside}' is not in the run's {len(panel)}-gene panel" in line
    assert f"--include-genes {outside}" in line


def test_lookup_cli(run_dir, sample_dir, tmp_path, capsys):
    from napari_seal.io.hest import load_sample

    sample = load_sample(sample_dir)
    x, y = sample.spots_xy[9]
    out = tmp_path / "l.json"
    rc = main(
        [
            "lookup",
            str(sample_dir),
            "--run",
            str(run_dir),
            "--at",
            f"{x},{y}",
            "--reference",
            str(sample_dir),
            "--k",
            "3",
            "--json",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["neighbours"][0]["spot_id"] == sample.adata.obs_names[9]
    assert res["neighbours"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert len(res["neighbours"]) == 3
    assert res["space"] == "image"
    assert res["expression"]["top_genes"]
    capsys.readouterr()
    rc = main(
        [
            "lookup",
            str(sample_dir),
            "--run",
            str(run_dir),
            "--at",
            "1,2;3",
            "--reference",
            str(sample_dir),
            "--json",
            str(out),
        ]
    )
    assert rc == 2
    assert "cannot read the region" in _err_line(capsys)


def test_query_omics_query_profile_vs_exemplar(run_dir, sample_dir, tmp_path, capsys):
    """--omics-query picks the omics query vector; the spot scores follow it too."""
    import csv

    from napari_seal.retrieval.results import read_scores

    got = {}
    for mode in ("exemplar", "profile"):
        out, spots = tmp_path / f"{mode}.zarr", tmp_path / f"{mode}.csv"
        rc = main(
            [
                "query",
                str(sample_dir),
                "--run",
                str(run_dir),
                "--gene",
                "ERBB2",
                "--omics-query",
                mode,
                "--out",
                str(out),
                "--spot-scores",
                str(spots),
                "--device",
                "cpu",
            ]
        )
        assert rc == 0, capsys.readouterr().err
        res = read_scores(out)
        assert res.info["omics_query"] == mode
        with spots.open() as fh:
            got[mode] = (res, [float(r[1]) for r in list(csv.reader(fh))[1:]])
    (ex, ex_spots), (pr, pr_spots) = got["exemplar"], got["profile"]
    assert "training spots" in ex.attrs()["score"]
    assert "training spots" not in pr.attrs()["score"]
    assert not np.allclose(ex.scores, pr.scores)
    assert not np.allclose(ex_spots, pr_spots)
