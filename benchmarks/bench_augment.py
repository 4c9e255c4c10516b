"""Training augmentation (``augment="hard"``, the ``cpu`` preset's) on real spot tiles.

The trainer augments every spot ``augment_views`` times before its first step
(``napari_seal.training._prefix``), and again per step where views are not cached, so
this is part of the ``prepare`` time that issue 14 compares with a measured ceiling.
This script times :func:`napari_seal.training.augment.augment_batch` on the bundled
her2st sample's 187 spot patches (224 px at 0.5 um/px), best of ``--rounds``, and
with ``--against REV`` also the module as it was at git revision ``REV`` (loaded from
``git show``), interleaved in one process; it checks that both give the same pixels
for the same seed and prints ``RATIO REV / now``. With ``--prepare`` (needs
``--against``) it also times the trainer's ``prepare`` (``iter_train`` up to its first
step, ``cpu`` preset, bundled sample, imports done beforehand) with either module,
interleaved, and prints ``RATIO prepare REV / now``.

Usage::

    python benchmarks/bench_augment.py [--rounds 5] [--against REV [--prepare]]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
MODULE = "src/napari_seal/training/augment.py"


def module_at(rev: str):
    """The augment module as it was at ``rev`` (a fresh module object)."""
    text = subprocess.run(
        ["git", "show", f"{rev}:{MODULE}"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "augment_at_rev.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("augment_at_rev", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def time_once(fn, tiles: torch.Tensor, seed: int) -> tuple[float, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    out = fn(tiles, mode="hard", generator=g)
    return time.perf_counter() - t0, out


def prepare_times(sample, fns: dict, *, rounds: int) -> dict[str, list[float]]:
    """``iter_train`` to its first step with each augment function, interleaved."""
    import peft  # noqa: F401  (imports are not prepare work)
    import scanpy  # noqa: F401
    import timm  # noqa: F401
    from bench_prepare_precision import seconds_to_first_step

    import napari_seal.training.augment as augment

    shipped = augment.augment_batch
    seconds_to_first_step(sample)  # warm-up: the first run pays one-off costs
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            augment.augment_batch = fn
            try:
                times[name].append(seconds_to_first_step(sample))
            finally:
                augment.augment_batch = shipped
            print(f"  prepare with {name}: {times[name][-1]:.2f} s", flush=True)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--against", help="a git revision to compare with")
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.prepare and not args.against:
        ap.error("--prepare compares with a revision: pass --against REV")
    if args.against:  # name it by its commit, so the JSON says what it compared
        args.against = subprocess.run(
            ["git", "rev-parse", "--short", args.against],
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    torch.set_num_threads(2)

    from napari_seal.io.hest import bundled_sample_path, load_sample
    from napari_seal.tiling.grid import spot_patches
    from napari_seal.training.augment import augment_batch

    sample = load_sample(bundled_sample_path())
    patches = spot_patches(sample, size_px=224, mpp=0.5)
    tiles = torch.from_numpy(patches).permute(0, 3, 1, 2).contiguous()
    fns = {"now": augment_batch}
    if args.against:
        fns[args.against] = module_at(args.against).augment_batch
    for fn in fns.values():  # warm-up
        time_once(fn, tiles[:8], 0)
    times: dict[str, list[float]] = {k: [] for k in fns}
    same = True
    for r in range(args.rounds):
        outs = {}
        for name, fn in fns.items():
            dt, outs[name] = time_once(fn, tiles, seed=r)
            times[name].append(dt)
        if args.against:
            same = same and torch.equal(outs["now"], outs[args.against])
    best = {k: min(v) for k, v in times.items()}
    print(f"augment 'hard', {len(tiles)} real spot tiles, 2 torch threads, "
          f"best of {args.rounds}:")
    for name, t in best.items():
        print(f"  {name:>12}: {t * 1e3:7.1f} ms ({len(tiles) / t:6.1f} tiles/s)")
    report = {"tiles": len(tiles), "best_s": best, "rounds_s": times}
    if args.against:
        ratio = best[args.against] / best["now"]
        print(f"  same pixels for the same seed: {same}")
        print(f"RATIO {args.against} / now = {ratio:.2f}")
        report.update({"same_pixels": same, "ratio": ratio})
    if args.prepare:
        report["prepare_s"] = prepare_times(sample, fns, rounds=min(3, args.rounds))
        best_p = {k: min(v) for k, v in report["prepare_s"].items()}
        print("prepare (iter_train to its first step), best of "
              f"{min(3, args.rounds)}: " + ", ".join(
                  f"{k} {v:.2f} s" for k, v in best_p.items()))
        print(f"RATIO prepare {args.against} / now = "
              f"{best_p[args.against] / best_p['now']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
