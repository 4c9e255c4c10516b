"""``predict`` and ``query`` without a model use the shipped SEAL model, and write
nothing that nobody named beside the inputs or into the installed package."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import napari_seal
from napari_seal.cli import main

PACKAGE_DATA = Path(napari_seal.__file__).parent / "data"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and mtime."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


@pytest.fixture
def slide(tmp_path):
    from napari_seal.testing import write_synthetic_slide

    path = tmp_path / "in" / "s.tif"
    return write_synthetic_slide(path, width_px=1200, height_px=900)


@pytest.fixture
def workspace(monkeypatch, tmp_path):
    ws = tmp_path / "ws"
    monkeypatch.setenv("NAPARI_SEAL_CACHE", str(ws))
    return ws


def test_predict_without_a_model_uses_the_shipped_model(
    slide, workspace, tmp_path, capsys
):
    inputs, package = snapshot(slide.parent), snapshot(PACKAGE_DATA)
    out = tmp_path / "out" / "pred.h5ad"
    args = ["predict", str(slide), "--out", str(out), "--genes", "ERBB2"]
    assert main([*args, "--device", "cpu"]) == 0, capsys.readouterr().err
    tiles = ad.read_h5ad(out)
    assert list(tiles.var_names) == ["ERBB2"]
    assert tiles.n_obs > 0
    assert np.isfinite(tiles.X).all()
    assert tiles.uns["napari_seal"]["head"] == "SEAL decoder"
    # the embedding store went to the workspace, keyed by slide and model
    stores = list((workspace / "stores").glob("s-*.zarr"))
    assert len(stores) == 1
    assert snapshot(slide.parent) == inputs  # nothing beside the input
    assert snapshot(PACKAGE_DATA) == package  # nothing into the package
    assert sorted(p.name for p in out.parent.iterdir()) == ["pred.h5ad"]


def test_query_without_run_uses_the_shipped_model(slide, workspace, tmp_path, capsys):
    import zarr

    inputs, package = snapshot(slide.parent), snapshot(PACKAGE_DATA)
    out = tmp_path / "scores.zarr"
    args = ["query", str(slide), "--gene", "HER2", "--route", "decoder"]
    assert main([*args, "--out", str(out), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "ERBB2" in err
    assert np.isfinite(np.asarray(zarr.open_group(str(out), mode="r")["scores"])).any()
    assert len(list((workspace / "stores").glob("s-*.zarr"))) == 1
    assert snapshot(slide.parent) == inputs
    assert snapshot(PACKAGE_DATA) == package


def test_help_says_the_shipped_model_is_the_default(capsys):
    for command in ("predict", "query"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "shipped" in capsys.readouterr().out
