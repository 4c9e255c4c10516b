"""``benchmarks/bench_gpu.py --smoke``: the GPU script's code, on the CPU (issue 14)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_peak_table_matches_card_names():
    bench = _load()
    assert bench.bf16_peak("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.bf16_peak("NVIDIA H100 PCIe") == 756.0
    assert bench.bf16_peak("NVIDIA H200") == 989.0
    assert bench.bf16_peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.bf16_peak("Tesla T4") is None


def test_smoke_mode_runs_every_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_SEAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "gpu.json"
    bench = _load()
    assert bench.main(["--smoke", "--workdir", str(tmp_path), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["encoder"] == "test-vit"
    assert Path(report["weights"]["weights_file"]).suffix == ".safetensors"
    assert report["model_only"]["module_tiles_per_s"] > 0
    assert report["model_only"]["gflop_per_tile"] > 0
    assert report["end_to_end"]["tiles"] == 32
    assert report["end_to_end"]["steady_tiles_per_s"] > 0
    train = report["training"]
    assert train["fits"] is True
    assert train["preset"] == "80GB"
    assert train["step_s"] > 0
    assert math.isfinite(train["loss"])
    text = capsys.readouterr().out
    assert "RATIO end-to-end / model-only" in text
