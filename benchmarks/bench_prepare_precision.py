"""Training ``prepare``: the frozen-prefix view cache in fp32 vs the steps' precision.

The trainer caches ``augment_views`` augmented views of every spot through the frozen
layers before the first step (``napari_seal.training._prefix``). Those forwards now
run under the same bf16 autocast as the steps where the CPU executes bf16 natively.
This script times ``iter_train`` up to its first step (the ``cpu`` preset on the
bundled sample, imports done beforehand) with the prefix forced to fp32 and as
shipped, interleaved three times in one process, and prints the best of each and
``RATIO fp32 / shipped``. On a CPU without native bf16 both are fp32 (ratio ~1).
Held-out effect of the change: ``docs/queries.md``. Not part of the test suite.

Usage::

    python benchmarks/bench_prepare_precision.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def seconds_to_first_step(sample) -> float:
    """Seconds from ``iter_train`` (``cpu`` preset, 2 steps) to its first step."""
    from napari_seal.training.config import config_from_preset
    from napari_seal.training.trainer import iter_train

    config = config_from_preset("cpu", max_steps=2)
    out = Path(tempfile.mkdtemp()) / "run"
    t0 = time.perf_counter()
    for ev in iter_train([sample], out=out, config=config, device="cpu"):
        if type(ev).__name__ == "StepEvent":
            return time.perf_counter() - t0
    msg = "training ended before its first step"
    raise RuntimeError(msg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    import peft  # noqa: F401  (imports are not prepare work)
    import scanpy  # noqa: F401
    import timm  # noqa: F401

    import napari_seal.training._prefix as prefix
    from napari_seal.io.hest import bundled_sample_path, load_sample
    from napari_seal.training.model import autocast_dtype

    sample = load_sample(bundled_sample_path())
    shipped = prefix.precompute_views

    def fp32_prefix(*a, **k):
        k["autocast"] = None
        return shipped(*a, **k)

    def prepare_s(mode: str) -> float:
        prefix.precompute_views = fp32_prefix if mode == "fp32" else shipped
        try:
            return seconds_to_first_step(sample)
        finally:
            prefix.precompute_views = shipped

    dtype = autocast_dtype("bf16", torch.device("cpu"))
    print(f"steps' precision here: {'bf16' if dtype is not None else 'fp32'}")
    times: dict[str, list[float]] = {"fp32": [], "shipped": []}
    for _ in range(args.rounds):
        for mode in times:
            times[mode].append(prepare_s(mode))
            print(f"  {mode:8s} prepare {times[mode][-1]:.2f} s", flush=True)
    best = {m: min(v) for m, v in times.items()}
    print(f"best: fp32 prefix {best['fp32']:.2f} s, shipped {best['shipped']:.2f} s; "
          f"RATIO fp32 / shipped = {best['fp32'] / best['shipped']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
