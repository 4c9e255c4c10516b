"""Peak memory of embedding does not grow with slide size (DESIGN 6).

Embeds the same tile budget (``--tiles``, the first tissue tiles) of a generated
10k x 10k and a generated 100k x 100k slide (lazy synthetic H&E pyramids from
:func:`napari_seal.testing.synthetic_large_slide`: pixels are produced on read, as
from a tiled TIFF) with the same encoder, each in a fresh subprocess, and reports
the peak RSS (``resource.getrusage``) above the process's RSS once the encoder is
built and warmed up. Judged by the ratio of the two peaks above baseline (goal:
about 1, i.e. memory does not grow with slide size beyond the output arrays).

Usage::

    python benchmarks/bench_embed_memory.py [--encoder default] [--tiles 256]
        [--sizes 10000 100000] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def child(size_px: int, encoder_name: str, n_tiles: int, batch_size: int) -> dict:
    """Run in the subprocess: embed n_tiles of a size x size slide, measure RSS."""
    import numpy as np

    from napari_seal.embedding.run import embed
    from napari_seal.models.factory import create_encoder
    from napari_seal.models.inference import encode_images
    from napari_seal.testing import synthetic_large_slide

    encoder = create_encoder(encoder_name)
    encode_images(
        encoder,
        np.zeros((batch_size, encoder.tile_px, encoder.tile_px, 3), np.uint8),
        batch_size=batch_size,
    )
    slide = synthetic_large_slide(size_px, size_px, mpp=0.5)
    base_mb = _rss_mb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store = Path(tempfile.mkdtemp()) / "mem.zarr"
    t0 = time.perf_counter()
    embed(slide, encoder, store, batch_size=batch_size, max_tiles=n_tiles)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import zarr

    g = zarr.open_group(store, mode="r")
    return {
        "size_px": size_px,
        "tiles": int(g["embeddings"].shape[0]),
        "grid_positions": int(g.attrs["grid"]["n_rows"] * g.attrs["grid"]["n_cols"]),
        "baseline_mb": base_mb,
        "peak_mb": max(peak_mb, peak_before),
        "peak_above_baseline_mb": max(peak_mb, peak_before) - base_mb,
        "output_mb": g["embeddings"].nbytes / 2**20,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", default="default")
    ap.add_argument("--tiles", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.encoder, args.tiles, args.batch_size)))
        return 0
    env = dict(os.environ)
    env.setdefault(
        "NAPARI_SEAL_CACHE",
        str(Path(tempfile.gettempdir()) / "napari-seal-bench" / "cache"),
    )
    results = []
    for size in args.sizes:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(size),
                "--encoder",
                args.encoder,
                "--tiles",
                str(args.tiles),
                "--batch-size",
                str(args.batch_size),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-3000:])
            return 1
        res = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(res)
        print(
            f"{size:>7} x {size:<7} px slide ({res['grid_positions']:>7} grid "
            f"positions): {res['tiles']} tiles in {res['seconds']:.1f} s, peak RSS "
            f"{res['peak_mb']:.0f} MB = baseline {res['baseline_mb']:.0f} MB + "
            f"{res['peak_above_baseline_mb']:.0f} MB (output {res['output_mb']:.1f} MB)"
        )
    if len(results) >= 2:
        small, large = results[0], results[-1]
        ratio = large["peak_above_baseline_mb"] / max(
            small["peak_above_baseline_mb"], 1.0
        )
        print(
            f"RATIO peak above baseline, {large['size_px']} / {small['size_px']} px "
            f"slide = {ratio:.2f} (goal ~1: memory does not grow with slide size)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
