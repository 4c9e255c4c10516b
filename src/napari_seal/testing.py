"""Public test helpers: seeded synthetic H&E-like slides.

- :func:`synthetic_he_image`: an in-memory RGB image with white glass, pink
  (eosin) tissue and purple (haematoxylin) nuclei, deterministic for a seed.
- :func:`write_synthetic_slide`: that image as a small multi-level pyramidal TIFF with
  its pixel size in the metadata (what tests open with ``open_slide``).
- :func:`synthetic_large_slide`: a lazy slide of any size (e.g. 100k x 100k) whose
  tiles are generated on demand, for benchmarks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["synthetic_he_image", "synthetic_large_slide", "write_synthetic_slide"]

BACKGROUND_RGB = (241, 239, 243)
_EOSIN = np.array([226, 146, 190], np.float32)
_HAEMATOXYLIN = np.array([92, 52, 140], np.float32)


def _smooth_noise(
    rng: np.random.Generator, h: int, w: int, cell_px: float
) -> np.ndarray:
    """Unit-variance-ish smooth noise with features about ``cell_px`` pixels wide."""
    from scipy import ndimage

    gh, gw = math.ceil(h / cell_px) + 2, math.ceil(w / cell_px) + 2
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    up = ndimage.zoom(grid, (h / (gh - 2), w / (gw - 2)), order=1, prefilter=False)
    return up[:h, :w] / 0.7


def synthetic_he_image(
    height_px: int, width_px: int, *, seed: int = 0, tissue: bool = True
) -> np.ndarray:
    """Return a seeded H&E-like ``(height_px, width_px, 3)`` uint8 image.

    Parameters
    ----------
    height_px, width_px
        Image size.
    seed
        Random seed (same seed, same image).
    tissue
        ``False`` gives blank glass (for no-tissue tests).
    """
    rng = np.random.default_rng(seed)
    h, w = int(height_px), int(width_px)
    img = np.empty((h, w, 3), np.int16)
    img[:] = BACKGROUND_RGB
    img += rng.integers(-2, 3, (h, w, 1), dtype=np.int16)
    if tissue:
        yy = (np.arange(h, dtype=np.float32)[:, None] - h / 2) / (0.42 * h)
        xx = (np.arange(w, dtype=np.float32)[None, :] - w / 2) / (0.42 * w)
        field = 1 - yy**2 - xx**2 + 0.3 * _smooth_noise(rng, h, w, max(h, w) / 5)
        region = field > 0.2
        texture = _smooth_noise(rng, h, w, 24)
        nuclei = (_smooth_noise(rng, h, w, 5) > 1.2) & region
        stroma = region & ~nuclei
        img[stroma] = (
            _EOSIN.astype(np.int16) + (12 * texture[stroma]).astype(np.int16)[:, None]
        )
        img[nuclei] = (
            _HAEMATOXYLIN.astype(np.int16)
            + (8 * texture[nuclei]).astype(np.int16)[:, None]
        )
        img[region] += rng.integers(-6, 7, (int(region.sum()), 3), dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_synthetic_slide(
    path: str | Path,
    *,
    width_px: int = 2048,
    height_px: int = 1536,
    mpp: float = 0.5,
    seed: int = 0,
    tile_px: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
    tissue: bool = True,
) -> Path:
    """Write :func:`synthetic_he_image` as a pyramidal TIFF with ``mpp`` metadata.

    Returns
    -------
    The path (levels halve until one tile: 2048 x 1536 at 256 px gives 4 levels).
    """
    from napari_seal.io.slide.writer import write_pyramidal_tiff

    image = synthetic_he_image(height_px, width_px, seed=seed, tissue=tissue)
    return write_pyramidal_tiff(
        path, image, mpp=mpp, tile_px=tile_px, compression=compression, quality=quality
    )


class _SyntheticLevel:
    """A level source that generates H&E-like tiles on demand from a tile bank."""

    def __init__(
        self,
        shape: tuple[int, int],
        downsample: int,
        full: tuple[int, int],
        bank: np.ndarray,
    ) -> None:
        self.shape = (int(shape[0]), int(shape[1]), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.tile = int(bank.shape[1])
        self.chunks = (self.tile, self.tile)
        self.downsample = downsample
        self.full = full  # level-0 (H, W)
        self.bank = bank
        self.glass = np.empty_like(bank[0])
        self.glass[:] = BACKGROUND_RGB

    def _chunk(self, iy: int, ix: int) -> np.ndarray:
        t, ds = self.tile, self.downsample
        fh, fw = self.full
        # tissue = central ellipse (level-0 units), glass elsewhere
        y = (np.array([iy * t, (iy + 1) * t]) * ds - fh / 2) / (0.4 * fh)
        x = (np.array([ix * t, (ix + 1) * t]) * ds - fw / 2) / (0.4 * fw)
        near_y = 0.0 if y[0] <= 0 <= y[1] else min(abs(y[0]), abs(y[1]))
        near_x = 0.0 if x[0] <= 0 <= x[1] else min(abs(x[0]), abs(x[1]))
        if near_y**2 + near_x**2 > 1:  # entirely outside: glass
            return self.glass
        k = (iy * 73856093 ^ ix * 19349663 ^ ds * 83492791) % len(self.bank)
        tile = self.bank[k]
        if max(abs(y)) ** 2 + max(abs(x)) ** 2 <= 1:  # entirely inside
            return tile
        ys = ((iy * t + np.arange(t)) * ds - fh / 2) / (0.4 * fh)
        xs = ((ix * t + np.arange(t)) * ds - fw / 2) / (0.4 * fw)
        outside = (ys[:, None] ** 2 + xs[None, :] ** 2) > 1
        return np.where(outside[..., None], self.glass, tile)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        t = self.tile
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for iy in range(y0 // t, (y1 - 1) // t + 1):
            for ix in range(x0 // t, (x1 - 1) // t + 1):
                tile = self._chunk(iy, ix)
                sy0, sy1 = max(y0, iy * t), min(y1, (iy + 1) * t)
                sx0, sx1 = max(x0, ix * t), min(x1, (ix + 1) * t)
                out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = tile[
                    sy0 - iy * t : sy1 - iy * t, sx0 - ix * t : sx1 - ix * t
                ]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        from napari_seal.io.slide.source import getitem_via_read

        return getitem_via_read(self, key)


def synthetic_large_slide(
    width_px: int,
    height_px: int,
    *,
    mpp: float = 0.5,
    tile_px: int = 512,
    seed: int = 0,
    n_bank: int = 16,
) -> Any:
    """A lazy H&E-like :class:`~napari_seal.io.slide.core.Slide` of any size.

    Tiles come from a bank of ``n_bank`` synthetic tiles, chosen by a hash of the
    tile position, inside a central elliptic "tissue" region; levels halve down to
    one tile. Nothing is generated until read, so a 100k x 100k slide costs nothing
    until it is written (see :func:`~napari_seal.io.slide.writer.write_pyramidal_tiff`).
    """
    from napari_seal.io.slide.core import Slide

    side = int(math.ceil(math.sqrt(n_bank)))
    big = synthetic_he_image(side * tile_px, side * tile_px, seed=seed)
    cy, cx = big.shape[0] // 2, big.shape[1] // 2
    # take bank tiles from the tissue-rich centre of the image
    half = min(cy, cx) // 2
    core = big[cy - half : cy + half, cx - half : cx + half]
    reps = math.ceil(tile_px * side / core.shape[0])
    core = np.tile(core, (reps, reps, 1))[: side * tile_px, : side * tile_px]
    bank = (
        core.reshape(side, tile_px, side, tile_px, 3)
        .swapaxes(1, 2)
        .reshape(-1, tile_px, tile_px, 3)
    )
    bank = np.ascontiguousarray(bank[:n_bank])
    shapes = [(int(height_px), int(width_px))]
    while max(shapes[-1]) > tile_px:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    sources = [
        _SyntheticLevel(s, 2**k, (int(height_px), int(width_px)), bank)
        for k, s in enumerate(shapes)
    ]
    identity = {
        "path": None,
        "name": f"synthetic-{width_px}x{height_px}",
        "size": int(width_px) * int(height_px) * 3,
        "mtime": 0.0,
        "token": f"synthetic-{width_px}x{height_px}-{tile_px}-{seed}-{n_bank}",
    }
    return Slide(
        sources,
        path=None,
        kind="array",
        mpp=float(mpp),
        mpp_source="user",
        name=identity["name"],
        identity=identity,
        downsamples=[float(2**k) for k in range(len(shapes))],
    )
