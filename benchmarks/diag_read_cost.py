"""Where ``embed``'s reading time goes on the CPU (issue 14's remaining gap).

On the real-tissue slide of ``bench_cpu_ceiling.py`` (her2st C2 mirrored 2 x 2,
0.69 um/px up-sampled to the encoder's 0.5 um/px; cached in ``--workdir``) this prints

1. the CPU time per tile of :func:`napari_seal.tiling.grid.read_tiles` (one thread),
   and how much of it is PIL's resize and JPEG decoding (cProfile);
2. torch's uint8 antialiased bilinear ``interpolate`` on a batch of 64 such patches,
   per tile (one thread): what a resize could cost if it had no sub-pixel offsets;
3. other ways to resample with ``read_patch``'s exact geometry (a sub-pixel box), per
   tile: PIL's resize of one patch and of a band of 8 abutting patches in one call
   (per-call overhead), PIL's affine transform, and torch's float ``grid_sample``;
4. ``embed`` steady tiles/s with the real reader and with reads replaced by tiles
   already in memory, interleaved ``--rounds`` times, each against the best
   model-only rate of its round: ``RATIO`` of each to model-only.

Usage::

    python benchmarks/diag_read_cost.py [--rounds 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def profile_reads(slide, grid, n: int = 1024) -> dict:
    from napari_seal.tiling.grid import read_tiles

    idx = np.arange(min(n, len(grid)))
    c0 = time.process_time()
    for s in range(0, idx.size, 64):
        read_tiles(slide, grid, idx[s:s + 64])
    per_tile = (time.process_time() - c0) / idx.size
    prof = cProfile.Profile()
    prof.enable()
    for s in range(0, idx.size, 64):
        read_tiles(slide, grid, idx[s:s + 64])
    prof.disable()
    stats = pstats.Stats(prof).stats
    total = sum(v[2] for v in stats.values())  # tottime of every function

    def share(word: str) -> float:
        return sum(v[2] for k, v in stats.items() if word in k[2]) / max(total, 1e-12)

    return {"cpu_ms_per_tile": per_tile * 1e3, "resize_share": share("resize"),
            "jpeg_share": share("jpeg_decode")}


def torch_resize_ms(patch_px: int, out_px: int) -> float:
    import torch
    import torch.nn.functional as F

    x = torch.randint(0, 256, (64, 3, patch_px, patch_px), dtype=torch.uint8)
    x = x.contiguous(memory_format=torch.channels_last)
    F.interpolate(x, size=(out_px, out_px), mode="bilinear", antialias=True)
    t0 = time.perf_counter()
    for _ in range(5):
        F.interpolate(x, size=(out_px, out_px), mode="bilinear", antialias=True)
    return (time.perf_counter() - t0) / 5 / 64 * 1e3


def resample_alternatives_ms(patch_px: int, out_px: int, n: int = 200) -> dict:
    """CPU ms per tile of resamplers that can place a patch at a sub-pixel offset."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    rng = np.random.default_rng(0)
    scale = patch_px / out_px
    span = out_px * scale
    bil = Image.Resampling.BILINEAR

    def per_tile(fn, tiles: int) -> float:
        fn()
        c0 = time.process_time()
        for _ in range(n):
            fn()
        return (time.process_time() - c0) / n / tiles * 1e3

    out = {}
    for tiles in (1, 8):
        region = rng.integers(0, 256, (patch_px + 6, int(span * tiles) + 6, 3),
                              dtype=np.uint8)
        im = Image.fromarray(region)
        box = (2.3, 2.7, 2.3 + span * tiles, 2.7 + span)
        out[f"PIL resize, {tiles} patch(es) per call"] = per_tile(
            lambda im=im, box=box, t=tiles: im.resize((out_px * t, out_px),
                                                      resample=bil, box=box), tiles)
    im = Image.fromarray(rng.integers(0, 256, (patch_px + 6, patch_px + 6, 3),
                                      dtype=np.uint8))
    data = (scale, 0, 2.3, 0, scale, 2.7)
    out["PIL affine transform"] = per_tile(
        lambda: im.transform((out_px, out_px), Image.Transform.AFFINE, data,
                             resample=bil), 1)
    x = torch.rand(64, 3, patch_px + 6, patch_px + 6) * 255
    g = torch.rand(64, out_px, out_px, 2) * 1.6 - 0.8
    out["torch grid_sample (float, batch 64)"] = per_tile(
        lambda: F.grid_sample(x, g, mode="bilinear", align_corners=False), 64)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    default_workdir = Path(tempfile.gettempdir()) / "napari-seal-bench"
    ap.add_argument("--workdir", type=Path, default=default_workdir)
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NAPARI_SEAL_CACHE", str(args.workdir / "cache"))

    import bench_cpu_ceiling as ceiling
    import torch

    import napari_seal.tiling.grid as grid_mod
    from napari_seal.embedding.inputs import tiling_for
    from napari_seal.models.factory import create_encoder

    encoder = create_encoder("default")
    slide = ceiling.real_tissue_slide(args.workdir)
    grid = grid_mod.make_tile_grid(slide, config=tiling_for(encoder))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    reads = profile_reads(slide, grid)
    patch_px = round(grid.tile_px * grid.mpp / float(slide.mpp))
    resize = torch_resize_ms(patch_px, grid.tile_px)
    alternatives = resample_alternatives_ms(patch_px, grid.tile_px, n=50)
    torch.set_num_threads(threads)
    for name, ms in alternatives.items():
        print(f"sub-pixel resampling, {name}: {ms:.2f} ms per tile (1 thread)")
    print(f"read_tiles: {reads['cpu_ms_per_tile']:.2f} ms CPU per tile (1 thread); "
          f"PIL resize {reads['resize_share']:.0%}, JPEG decoding "
          f"{reads['jpeg_share']:.0%} of it")
    print(f"torch uint8 antialiased interpolate, {patch_px} -> {grid.tile_px} px, "
          f"batch 64: {resize:.2f} ms per tile (1 thread)")

    tiles = grid_mod.read_tiles(slide, grid, np.arange(256))
    real = grid_mod.read_tiles

    def in_memory(slide, grid, index):
        return tiles[np.asarray(index) % len(tiles)]

    ratios: dict[str, list[float]] = {"real reads": [], "tiles in memory": []}
    for r in range(args.rounds):
        best = max(ceiling.model_only(encoder, tiles, batch_size=64, rounds=1).values())
        for name, fn in (("real reads", real), ("tiles in memory", in_memory)):
            grid_mod.read_tiles = fn
            try:
                e2e = ceiling.end_to_end(slide, encoder, batch_size=64,
                                         max_tiles=None, workdir=args.workdir)
            finally:
                grid_mod.read_tiles = real
            ratios[name].append(e2e["steady_tiles_per_s"] / best)
            print(f"  round {r + 1}, {name}: {e2e['steady_tiles_per_s']:.1f} tiles/s "
                  f"vs model-only {best:.1f}", flush=True)
    for name, v in ratios.items():
        print(f"RATIO embed / model-only, {name}: {max(v):.2f} (best of {len(v)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
