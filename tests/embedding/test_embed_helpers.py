"""Helpers shared by the embed / predict / export tests (synthetic slides, stores)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_he(
    height_px: int = 1400, width_px: int = 1800, *, seed: int = 0
) -> np.ndarray:
    """A seeded H&E-like image: glass around a central tissue region (uint8 RGB)."""
    from napari_seal.testing import synthetic_he_image

    return synthetic_he_image(height_px, width_px, seed=seed)


def array_slide(img: np.ndarray | None = None, *, mpp: float = 0.5):
    from napari_seal.io.slide.core import Slide

    return Slide.from_array(synthetic_he() if img is None else img, mpp=mpp)


def make_vit():
    """The registry's tiny ``test-vit`` (random weights, fixed seed)."""
    import torch

    from napari_seal.models.factory import create_encoder

    torch.manual_seed(0)
    return create_encoder("test-vit")


def synthetic_store(
    path: Path,
    *,
    embeddings_fn=None,
    embed_dim: int = 8,
    chunk_tiles: int = 16,
    slide=None,
    config=None,
):
    """Write a complete store for a synthetic slide with chosen embeddings (no model).

    ``embeddings_fn(grid) -> (n, D)``; default: random normal.
    """
    from napari_seal.embedding.store import open_or_create_store
    from napari_seal.tiling.grid import TilingConfig, make_tile_grid

    slide = slide if slide is not None else array_slide()
    config = config or TilingConfig(tile_px=64, mpp=1.0)
    grid = make_tile_grid(slide, config=config)
    n = len(grid.tile_ids)
    if embeddings_fn is None:
        emb = np.random.default_rng(0).normal(size=(n, embed_dim)).astype(np.float32)
    else:
        emb = np.asarray(embeddings_fn(grid), np.float32)
    signature = {
        "format": "napari-seal.embeddings/1",
        "slide": {"path": None},
        "encoder": {"name": "synthetic"},
    }
    writer = open_or_create_store(
        path,
        signature=signature,
        grid=grid,
        embed_dim=emb.shape[1],
        chunk_tiles=chunk_tiles,
        dtype="float32",
        precision="float32",
    )
    for chunk in range(writer.n_chunks):
        c0, c1 = writer.chunk_range(chunk)
        writer.write_chunk(chunk, emb[c0:c1])
    return grid, emb
