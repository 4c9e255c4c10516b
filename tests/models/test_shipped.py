"""The SEAL model shipped with the package: present, small, loadable, documented."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_seal.errors import ShippedModelError
from napari_seal.models import shipped

REPO = Path(__file__).resolve().parents[2]


def test_shipped_model_is_installed_small_and_stores_fp16_heads():
    from safetensors import safe_open

    path = shipped.shipped_run_path()
    assert path.name == shipped.SHIPPED_MODEL
    assert path.parent.parent.name == "data"
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert size < 10 * 2**20, f"{size / 2**20:.2f} MB"
    assert not (path / "checkpoints").exists()
    with safe_open(str(path / "heads.safetensors"), "pt") as f:
        dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118
    assert "F16" in dtypes
    assert "F32" not in dtypes
    assert (path / "PROVENANCE.md").is_file()


def test_shipped_model_loads_through_load_run_and_predicts_erbb2():
    from napari_seal.training.runs import load_run

    run = load_run(shipped.shipped_run_path())
    assert run.config.encoder == "default"
    assert run.config.preset == "cpu"
    assert "ERBB2" in run.genes
    emb = np.random.default_rng(0).normal(size=(4, run.encoder.embed_dim))
    pred = run.predict_expression(emb.astype(np.float32))
    assert pred.shape == (4, len(run.genes))
    assert np.isfinite(pred).all()
    # its reference bank: the 5 training sections' spots, for exemplar queries and the
    # reliability map
    assert run.bank is not None
    assert run.bank.n_spots > 800
    assert len(run.bank.samples) == 5


def test_provenance_gives_data_licence_and_the_benchmarked_held_out_numbers():
    info = shipped.shipped_model_info()
    assert info["path"] == str(shipped.shipped_run_path())
    data = info["training_data"]
    assert data["licence"] == "CC BY 4.0"
    assert "Andersson" in data["attribution"]
    assert data["sections"] == [f"her2st_C{i}" for i in range(2, 7)]
    assert info["size_bytes"] < 10 * 2**20
    held = info["held_out"]
    assert held["recipe_matches_benchmark_runs"] is True
    # the numbers are the benchmark files' numbers, not typed in by hand
    query = json.loads((REPO / "docs/images/bench_gene_query_her2st.json").read_text())
    assert held["gene_query_auroc"]["decoder"]["mean"] == pytest.approx(
        query["summary"]["auroc_mean"]["decoder"]
    )
    bench = json.loads((REPO / "docs/images/bench_seal_her2st.json").read_text())
    seal = next(
        r for r in bench["results"]
        if (r["method"], r["targets"], r["alpha"]) == ("seal", "hest", "hest")
    )
    assert held["hest_probe_pearson"]["seal/hest"]["folds"] == seal["folds"]
    # ... and the recipe is the config of those benchmark runs
    config = json.loads((shipped.shipped_run_path() / "config.json").read_text())
    assert all(
        {k: v for k, v in f["config"].items() if k != "weights"}
        == {k: v for k, v in config.items() if k != "weights"}
        for f in query["folds"]
    )


def test_a_missing_shipped_model_is_a_typed_error_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(shipped, "_folder", lambda: tmp_path / "gone")
    with pytest.raises(ShippedModelError, match="reinstall napari-seal"):
        shipped.shipped_run_path()
    (tmp_path / "gone").mkdir()
    for name in ("config.json", "panel.json", "heads.safetensors", "DONE"):
        (tmp_path / "gone" / name).write_text("{}")
    (tmp_path / "gone" / "provenance.json").write_text("not json")
    with pytest.raises(ShippedModelError, match="unreadable"):
        shipped.shipped_model_info()


def test_summary_for_the_panel_quotes_the_provenance_numbers():
    info = shipped.shipped_model_info()
    text = shipped.shipped_model_summary(info)
    held = info["held_out"]
    query = held["gene_query_auroc"][f"{held['default_route']}-exemplar"]
    assert info["name"] in text
    assert "CC BY 4.0" in text
    assert f"AUROC {query['mean']:.3f}" in text
    assert f"ERBB2 {query['markers']['ERBB2']:.3f}" in text
    assert f"{held['hest_probe_pearson']['seal/normalized']['mean']:.3f}" in text
    # a provenance without held-out numbers still gives the first two lines
    bare = {k: v for k, v in info.items() if k != "held_out"}
    assert len(shipped.shipped_model_summary(bare).splitlines()) == 2
