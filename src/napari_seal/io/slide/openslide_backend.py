"""OpenSlide fallback for formats tifffile cannot read (MRXS, VMS, BIF...).

Only used when ``openslide`` (``pip install napari-seal[openslide]``) is importable.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import SlideReadError
from napari_seal.io.slide.source import TileCache, getitem_via_read

__all__ = [
    "OpenSlideHandle",
    "OpenSlideLevel",
    "have_openslide",
    "open_openslide_levels",
]

CHUNK_PX = 512


def have_openslide() -> bool:
    """Whether the OpenSlide Python bindings and library can be imported."""
    try:
        import openslide  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


class OpenSlideHandle:
    """A lazily (re)opened ``openslide.OpenSlide``; pickles as its path."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.cache = TileCache()
        self._osr: Any = None
        self._lock = threading.Lock()

    @property
    def osr(self) -> Any:
        """The open ``OpenSlide`` object."""
        if self._osr is None:
            import openslide

            with self._lock:
                if self._osr is None:
                    self._osr = openslide.OpenSlide(str(self.path))
        return self._osr

    def close(self) -> None:
        """Close the slide."""
        with self._lock:
            if self._osr is not None:
                self._osr.close()
                self._osr = None
        self.cache.clear()

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


class OpenSlideLevel:
    """One OpenSlide level as a level source (RGBA composited on white)."""

    def __init__(self, handle: OpenSlideHandle, level: int) -> None:
        self.handle = handle
        self.level = level
        w, h = handle.osr.level_dimensions[level]
        self.shape = (int(h), int(w), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.chunks = (CHUNK_PX, CHUNK_PX)
        self.downsample = float(handle.osr.level_downsamples[level])

    def __getstate__(self) -> dict:
        return {"handle": self.handle, "level": self.level}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["handle"], state["level"])

    def _region(self, y0: int, x0: int, h: int, w: int) -> np.ndarray:
        loc = (round(x0 * self.downsample), round(y0 * self.downsample))
        rgba = np.asarray(self.handle.osr.read_region(loc, self.level, (w, h)))
        alpha = rgba[..., 3:4].astype(np.uint16)
        rgb = (
            rgba[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127
        ) // 255
        return rgb.astype(np.uint8)

    def _chunk(self, iy: int, ix: int) -> np.ndarray:
        key = (self.level, iy, ix)
        tile = self.handle.cache.get(key)
        if tile is None:
            y0, x0 = iy * CHUNK_PX, ix * CHUNK_PX
            h = min(CHUNK_PX, self.shape[0] - y0)
            w = min(CHUNK_PX, self.shape[1] - x0)
            tile = self._region(y0, x0, h, w)
            self.handle.cache.put(key, tile)
        return tile

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return pixels ``[y0, y1) x [x0, x1)`` (inside the image)."""
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for iy in range(y0 // CHUNK_PX, (y1 - 1) // CHUNK_PX + 1):
            for ix in range(x0 // CHUNK_PX, (x1 - 1) // CHUNK_PX + 1):
                tile = self._chunk(iy, ix)
                ty0, tx0 = iy * CHUNK_PX, ix * CHUNK_PX
                sy0, sy1 = max(y0, ty0), min(y1, ty0 + tile.shape[0])
                sx0, sx1 = max(x0, tx0), min(x1, tx0 + tile.shape[1])
                out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = tile[
                    sy0 - ty0 : sy1 - ty0, sx0 - tx0 : sx1 - tx0
                ]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        return getitem_via_read(self, key)


def open_openslide_levels(
    path: Path,
) -> tuple[list[OpenSlideLevel], float | None, OpenSlideHandle]:
    """Open ``path`` with OpenSlide; return levels, pixel size and the handle.

    Raises
    ------
    SlideReadError
        When OpenSlide cannot open the file.
    """
    import openslide

    handle = OpenSlideHandle(path)
    try:
        osr = handle.osr
        levels = [OpenSlideLevel(handle, i) for i in range(osr.level_count)]
        levels[0]._chunk(0, 0)
    except (openslide.OpenSlideError, OSError, ValueError) as err:
        handle.close()
        msg = (
            f"OpenSlide cannot read {path} ({err}); the file is corrupt or not a "
            "supported slide"
        )
        raise SlideReadError(msg) from err
    mpp = None
    raw = osr.properties.get("openslide.mpp-x")
    if raw:
        try:
            mpp = float(raw)
        except ValueError:
            mpp = None
        if mpp is not None and not (math.isfinite(mpp) and 0.05 <= mpp <= 20):
            mpp = None
    return levels, mpp, handle
