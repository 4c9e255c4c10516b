"""Per-tile ``done`` flags of the embedding store (tiles embedded on demand).

A store's ``done`` array flags whole chunks (batch ``embed``); ``tile_done`` flags
single tiles (the viewer's field of view, :mod:`napari_seal.embedding.on_demand`).
A tile is embedded when either flag is set; a chunk whose tiles are all flagged gets
its chunk flag, so batch ``embed`` skips it on resume and reuses the tiles of
partial chunks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_seal.errors import OutputPathError

__all__ = ["create_tile_done", "tile_done_flags", "write_tiles"]


def create_tile_done(group: Any, n_tiles: int) -> None:
    """Create the ``(n_tiles,)`` bool ``tile_done`` array of a store group."""
    group.create_array(
        "tile_done",
        shape=(max(1, n_tiles),),
        chunks=(max(1, min(n_tiles, 1 << 16)),),
        dtype=bool,
        fill_value=False,
        overwrite=True,
    )


def tile_done_flags(group: Any, n_tiles: int, chunk_tiles: int) -> np.ndarray:
    """``(n_tiles,)`` bool of a store group: chunk flag or per-tile flag set."""
    done = np.asarray(group["done"][:], dtype=bool)
    per_tile = np.repeat(done, int(chunk_tiles))[:n_tiles]
    if "tile_done" in group and not per_tile.all():
        per_tile = per_tile | np.asarray(group["tile_done"][:n_tiles], dtype=bool)
    return per_tile


def write_tiles(writer: Any, index: np.ndarray, embeddings: np.ndarray) -> None:
    """Write single tiles of a ``StoreWriter`` (positions ``index``), then flags.

    The embeddings are written before any flag, so a crash leaves tiles
    un-flagged (recomputed) and never flagged but missing. A chunk whose tiles
    are all done gets its chunk flag, so batch ``embed`` skips it on resume.
    """
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    if index.size == 0:
        return
    order = np.argsort(index, kind="stable")
    index, embeddings = index[order], np.asarray(embeddings)[order]
    if embeddings.shape != (index.size, writer.embeddings.shape[1]):
        msg = (
            f"got embeddings of shape {embeddings.shape} for {index.size} tiles, "
            f"expected {(index.size, writer.embeddings.shape[1])}"
        )
        raise RuntimeError(msg)
    try:
        values = embeddings.astype(writer.embeddings.dtype, copy=False)
        writer.embeddings.set_orthogonal_selection((index, slice(None)), values)
        writer.tile_done.set_orthogonal_selection((index,), True)
        done = writer.tiles_done()
        for chunk in np.unique(index // writer.chunk_tiles):
            c0, c1 = writer.chunk_range(int(chunk))
            if done[c0:c1].all() and not bool(writer.done[int(chunk)]):
                writer.done[int(chunk)] = True
    except OSError as err:
        msg = (
            f"cannot write the embedding store {writer.path}: {err.strerror or err}; "
            "the tiles written so far are kept: free disk space (or fix "
            "permissions) and try again"
        )
        raise OutputPathError(msg) from err
