"""``embed`` reader threads on the CPU: how many, measured (issue 14).

The reader threads decode and resample tiles beside the model's torch threads. On a
machine whose cores the model already uses, each extra reader preempts the model.
This script runs :func:`napari_seal.embedding.run.iter_embed` on the real-tissue slide
of ``bench_cpu_ceiling.py`` (her2st C2 mirrored 2 x 2, 2,498 tiles; cached in
``--workdir``) with each ``--workers`` count in turn, ``--rounds`` times interleaved,
and prints each run's steady tiles/s, the mean and best per count, how many rounds the
first count won, and ``RATIO`` (mean of the first count / mean of the second).
``auto_read_workers`` picks the count when none is given.

Usage::

    python benchmarks/bench_read_workers.py [--workers 1 2] [--rounds 4]
        [--workdir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, nargs=2, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=4)
    default_workdir = Path(tempfile.gettempdir()) / "napari-seal-bench"
    ap.add_argument("--workdir", type=Path, default=default_workdir)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NAPARI_SEAL_CACHE", str(args.workdir / "cache"))

    import bench_cpu_ceiling as ceiling
    import torch

    import napari_seal.embedding.run as run
    from napari_seal.models.factory import create_encoder

    encoder = create_encoder("default")
    slide = ceiling.real_tissue_slide(args.workdir)
    shipped = run.iter_embed
    rates: dict[int, list[float]] = {w: [] for w in args.workers}
    auto = run.auto_read_workers("cpu", torch.get_num_threads())
    print(f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
          f"auto_read_workers picks {auto}")
    try:
        for r in range(args.rounds):
            for w in args.workers:
                run.iter_embed = functools.partial(shipped, read_workers=w)
                res = ceiling.end_to_end(
                    slide, encoder, batch_size=64, max_tiles=None, workdir=args.workdir
                )
                rates[w].append(res["steady_tiles_per_s"])
                print(f"  round {r + 1}, {w} reader(s): "
                      f"{rates[w][-1]:.1f} tiles/s", flush=True)
    finally:
        run.iter_embed = shipped
    a, b = args.workers
    mean = {w: sum(v) / len(v) for w, v in rates.items()}
    wins = sum(x > y for x, y in zip(rates[a], rates[b], strict=True))
    for w in args.workers:
        print(f"{w} reader(s): mean {mean[w]:.1f}, best {max(rates[w]):.1f} tiles/s")
    print(f"{a} reader(s) faster in {wins} of {args.rounds} rounds; "
          f"RATIO {a} / {b} readers (mean) = {mean[a] / mean[b]:.3f}")
    if args.json:
        args.json.write_text(json.dumps(
            {"workers": args.workers, "rates": {str(k): v for k, v in rates.items()},
             "auto": auto, "ratio": mean[a] / mean[b], "wins": wins}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
