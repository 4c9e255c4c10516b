"""Under load (issue 7): embedding memory stays bounded as the tile count grows.

Scaled-down runs of ``benchmarks/bench_load_200k.py`` (same functions): a generated
pyramidal TIFF written by the streaming writer, embedded with ``test-vit`` while the
RSS is sampled. Bounded memory = the RSS at the end of the run is about the RSS at 10%
of it. The full ~200k-tile run with a viewer is the benchmark itself.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_load_200k.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_load_200k", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_slide_embeds_with_flat_memory(bench, tmp_path):
    """Default run (< 30 s): ~500 tiles in this process; memory does not grow."""
    tiff = tmp_path / "s.tif"
    info = bench.make_slide(tiff, 7000)
    assert info["tiff_mb"] > 0
    res = bench.embed_measured(tiff, tmp_path / "s.zarr", batch_size=32)
    assert res["all_chunks_done"]
    assert res["tiles"] > 300
    assert res["rss_growth_10_to_100"] is not None
    assert res["rss_growth_10_to_100"] < 1.25, res
    # after the imports and the model (counted in rss_10), little more is needed
    assert res["peak_rss_mb"] - res["rss_10_mb"] < 300, res


@pytest.mark.slow
def test_20k_tiles_embed_with_bounded_memory(bench, tmp_path):
    """`make test-slow`: ~20k tiles in a fresh process; RSS growth 10% -> 100% ~ 1."""
    import argparse

    tiff = tmp_path / "s.tif"
    bench.make_slide(tiff, 45_000)
    args = argparse.Namespace(encoder="test-vit", batch_size=64)
    res = bench.run_child("plain", tiff, tmp_path / "s.zarr", args)
    assert res["all_chunks_done"]
    assert res["tiles"] > 15_000
    assert res["rss_growth_10_to_100"] < 1.1, res
    # the output array (tiles x 64 float32) is on disk, not in memory
    assert res["peak_rss_mb"] < 2048, res
