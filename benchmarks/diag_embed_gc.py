"""Does Python's garbage collector cost ``embed`` anything? (issue 14)

Runs :func:`napari_seal.embedding.run.iter_embed` (auto plan, default encoder) on the
her2st C2 section mirrored 2 x 2 (``bench_cpu_ceiling.py``'s slide, cached in
``--workdir``) with a ``gc.callbacks`` hook, and prints the embed time and the number
and total time of the collections per generation and thread during it.

Usage::

    python benchmarks/diag_embed_gc.py [--max-tiles 1500] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import collections
import gc
import sys
import tempfile
import threading
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tiles", type=int, default=1500)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir())
                                             / "napari-seal-gc"))
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cpu_ceiling import real_tissue_slide

    from napari_seal.embedding.run import iter_embed
    from napari_seal.models.factory import create_encoder

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    slide = real_tissue_slide(workdir)
    encoder = create_encoder("default")
    log: list[tuple[int, float, str]] = []
    start: dict[str, float] = {}

    def hook(phase: str, info: dict) -> None:
        if phase == "start":
            start["t"] = time.perf_counter()
        else:
            log.append((info["generation"], time.perf_counter() - start["t"],
                        threading.current_thread().name.split("_")[0]))

    store = Path(tempfile.mkdtemp(dir=workdir)) / "gc.zarr"
    gc.callbacks.append(hook)
    t0 = time.perf_counter()
    for _ in iter_embed(slide, encoder, store, batch_size=64,
                        max_tiles=args.max_tiles):
        pass
    dt = time.perf_counter() - t0
    gc.callbacks.remove(hook)
    by: dict[tuple[int, str], list[float]] = collections.defaultdict(list)
    for gen, d, thread in log:
        by[(gen, thread)].append(d)
    total = sum(d for _, d, _ in log)
    print(f"embed {dt:.2f} s; collections {len(log)}, {1000 * total:.1f} ms in all "
          f"(RATIO gc / embed = {total / dt:.4f})")
    for (gen, thread), ds in sorted(by.items()):
        print(f"  gen {gen} on {thread}: {len(ds)} x, {1000 * sum(ds):.1f} ms")


if __name__ == "__main__":
    main()
