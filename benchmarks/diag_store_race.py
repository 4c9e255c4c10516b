"""Two writers on one embedding store: a batch ``embed`` and a live view (issue 12).

A batch writer fills whole chunks (``StoreWriter.write_chunk``) while another process
writes random single tiles (``write_tiles``, as the viewer's on-demand embedder does)
into the same store, both with the true values. Afterwards every tile flagged done must
hold its true embedding; the script prints how many do not ("flagged but wrong"), per
round. Both writers take the store's write lock
(:mod:`napari_seal.embedding.store_lock`); ``--no-lock`` replaces it with a no-op in
both processes, to see what it prevents.

Usage::

    python benchmarks/diag_store_race.py [--rounds 3] [--tile-writes 1500] [--no-lock]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "embedding"))

SIGNATURE = {"format": "napari-seal.embeddings/1", "slide": {"path": None},
             "encoder": {"name": "synthetic"}}


def _unlock() -> None:
    import contextlib

    import napari_seal.embedding.store as store

    store.store_write_lock = lambda path: contextlib.nullcontext()


def _writer(path):
    from test_embed_helpers import array_slide, synthetic_he

    from napari_seal.embedding.store import open_or_create_store
    from napari_seal.tiling.grid import TilingConfig, make_tile_grid

    grid = make_tile_grid(array_slide(synthetic_he(4000, 5000)),
                          config=TilingConfig(tile_px=64, mpp=1.0))
    return open_or_create_store(path, signature=SIGNATURE, grid=grid, embed_dim=8,
                                chunk_tiles=16, dtype="float32", precision="float32")


def _truth(n):
    return np.repeat(np.arange(1, n + 1, dtype=np.float32)[:, None], 8, axis=1)


def _batch(path, no_lock=False):
    if no_lock:
        _unlock()
    w = _writer(path)
    t = _truth(w.n_tiles)
    for c in range(w.n_chunks):
        a, b = w.chunk_range(c)
        w.write_chunk(c, t[a:b])
        time.sleep(0.02)  # spread the chunks over the other writer's run


def _live(path, n_writes, seed, no_lock=False):
    if no_lock:
        _unlock()
    w = _writer(path)
    t = _truth(w.n_tiles)
    rng = np.random.default_rng(seed)
    for _ in range(n_writes):
        idx = np.unique(rng.integers(0, w.n_tiles, 6))
        w.write_tiles(idx, t[idx])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tile-writes", type=int, default=1500)
    ap.add_argument("--no-lock", action="store_true", help="writers without the lock")
    args = ap.parse_args()
    import zarr

    from napari_seal.embedding.tile_flags import tile_done_flags

    for r in range(args.rounds):
        path = Path(tempfile.mkdtemp()) / "s.zarr"
        w = _writer(path)
        procs = [mp.Process(target=_batch, args=(path, args.no_lock)),
                 mp.Process(target=_live,
                            args=(path, args.tile_writes, r, args.no_lock))]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        g = zarr.open_group(path, mode="r")
        done = tile_done_flags(g, w.n_tiles, w.chunk_tiles)
        wrong = done & ~np.all(g["embeddings"][:] == _truth(w.n_tiles), axis=1)
        print(f"round {r}: {w.n_tiles} tiles, {int(done.sum())} flagged done, "
              f"{int(wrong.sum())} flagged but wrong")


if __name__ == "__main__":
    main()
