"""Level sources: the array-like objects behind each pyramid level of a ``Slide``.

A level source has ``shape`` ``(H, W, 3)``, ``dtype`` uint8, ``ndim`` 3, ``chunks``
(the preferred ``(rows, cols)`` read block, usually the file's tile) and
``read(y0, y1, x0, x1)`` returning the pixels inside the image. ``__getitem__`` makes
it usable by :func:`dask.array.from_array`. Sources are picklable so dask graphs
that hold them can be sent to other processes.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Protocol

import numpy as np

from napari_seal.errors import BadInputError

__all__ = [
    "MAX_SIDE_PX",
    "ArraySource",
    "CachedChunkSource",
    "LevelSource",
    "TileCache",
    "available_memory_bytes",
    "block_mean",
    "check_mpp",
    "getitem_via_read",
    "level_downsample",
    "normalize_key",
    "read_window",
]

#: Largest accepted image side (TIFF/PNG headers can claim more).
MAX_SIDE_PX = 2**31 - 1

WHITE = 255


class LevelSource(Protocol):
    """What a pyramid level must provide (see module docstring)."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    ndim: int
    chunks: tuple[int, int]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray: ...

    def __getitem__(self, key: Any) -> np.ndarray: ...


def available_memory_bytes() -> int:
    """Return the memory available to this process (``MemAvailable``), in bytes."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def normalize_key(key: Any, shape: tuple[int, ...]) -> tuple[slice, slice, Any]:
    """Turn a numpy-style index into ``(row slice, col slice, channel index)``.

    Only basic indexing is supported (slices and integers); integers are
    returned as length-1 slices plus a flag in the caller's hands.
    """
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = (slice(None),) * (len(shape) - len(key) + 1)
        key = key[:i] + fill + key[i + 1 :]
    key = key + (slice(None),) * (len(shape) - len(key))
    return key[0], key[1], key[2]


def _bounds(k: Any, n: int) -> tuple[int, int, Any]:
    """Return the covering range ``[lo, hi)`` of an index and the local index."""
    if isinstance(k, slice):
        r = range(*k.indices(n))
        if len(r) == 0:
            return 0, 0, slice(0, 0)
        lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
        if r.step == 1:
            return lo, hi, slice(0, hi - lo)
        return lo, hi, np.asarray(r) - lo
    i = int(k)
    if i < 0:
        i += n
    if not 0 <= i < n:
        msg = f"index {k} is out of bounds for size {n}"
        raise IndexError(msg)
    return i, i + 1, 0


def getitem_via_read(src: LevelSource, key: Any) -> np.ndarray:
    """Implement ``src[key]`` for basic indexing on top of ``src.read``."""
    ky, kx, kc = normalize_key(key, src.shape)
    y0, y1, ly = _bounds(ky, src.shape[0])
    x0, x1, lx = _bounds(kx, src.shape[1])
    if y1 > y0 and x1 > x0:
        block = src.read(y0, y1, x0, x1)
    else:
        block = np.empty((y1 - y0, x1 - x0, src.shape[2]), src.dtype)
    if isinstance(ly, np.ndarray) and isinstance(lx, np.ndarray):
        return block[np.ix_(ly, lx)][..., kc]
    return (
        block[ly][:, lx][..., kc] if not isinstance(ly, int) else block[ly][lx][..., kc]
    )


class TileCache:
    """A small thread-safe LRU cache of decoded tiles, bounded in bytes."""

    def __init__(self, max_bytes: int = 96 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> np.ndarray | None:
        """Return the cached tile or ``None``."""
        with self._lock:
            tile = self._data.get(key)
            if tile is not None:
                self._data.move_to_end(key)
            return tile

    def put(self, key: Hashable, tile: np.ndarray) -> None:
        """Store a tile, evicting the least recently used ones beyond the budget."""
        if tile.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._data[key] = tile
            self._bytes += tile.nbytes
            while self._bytes > self.max_bytes and self._data:
                _, dropped = self._data.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        """Drop every cached tile."""
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"])


class ArraySource:
    """A level source over a numpy, zarr or dask array of shape ``(H, W, 3)``.

    Parameters
    ----------
    array
        Anything supporting basic slicing; dask arrays are computed with the
        synchronous scheduler (only the chunks touched by a read are computed).
    chunks
        Preferred read block ``(rows, cols)``; defaults to the array's own chunks
        or 512.
    """

    def __init__(self, array: Any, *, chunks: tuple[int, int] | None = None) -> None:
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = 3
        if chunks is None:
            own = getattr(array, "chunks", None)
            if own is not None and len(own) >= 2:
                first = own[0][0] if isinstance(own[0], tuple) else own[0]
                second = own[1][0] if isinstance(own[1], tuple) else own[1]
                chunks = (int(first), int(second))
            else:
                chunks = (512, 512)
        self.chunks = (max(1, chunks[0]), max(1, chunks[1]))
        self._is_dask = type(array).__module__.startswith("dask")

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return ``array[y0:y1, x0:x1]`` as numpy (inside the image only)."""
        out = self.array[y0:y1, x0:x1]
        if self._is_dask:
            out = out.compute(scheduler="synchronous")
        return np.asarray(out)

    def __getitem__(self, key: Any) -> np.ndarray:
        return getitem_via_read(self, key)


def read_window(src: LevelSource, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Read ``[y0, y1) x [x0, x1)`` of a level; pixels outside the image are white."""
    h, w = src.shape[0], src.shape[1]
    oh, ow = max(0, y1 - y0), max(0, x1 - x0)
    cy0, cy1 = max(y0, 0), min(y1, h)
    cx0, cx1 = max(x0, 0), min(x1, w)
    if cy0 == y0 and cx0 == x0 and cy1 == y1 and cx1 == x1:
        return np.ascontiguousarray(src.read(y0, y1, x0, x1), dtype=np.uint8)
    out = np.full((oh, ow, 3), WHITE, np.uint8)
    if cy1 > cy0 and cx1 > cx0:
        out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = src.read(cy0, cy1, cx0, cx1)
    return out


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Area-downsample an ``(H, W, 3)`` uint8 image by an integer factor.

    Edge blocks that are cut by the image border average only the pixels that
    exist (the output has ``ceil(H / factor)`` rows). Uses Pillow's ``reduce``.
    """
    from PIL import Image

    factor = int(factor)
    if factor <= 1:
        return image
    reduced = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).reduce(
        factor
    )
    return np.asarray(reduced)


class CachedChunkSource:
    """A level source that reads whole chunks of an array and caches them.

    Used for the zarr pyramid cache of flat images: reads are chunk-aligned (what
    zarr decodes anyway) and neighbouring patches reuse the decoded chunks.

    Parameters
    ----------
    array
        A zarr (or numpy) array of shape ``(H, W, 3)``.
    chunks
        Chunk ``(rows, cols)``.
    cache
        Shared tile cache; ``key`` distinguishes this level in it.
    key
        Hashable prefix of this level's cache keys.
    """

    def __init__(
        self, array: Any, *, chunks: tuple[int, int], cache: TileCache, key: Hashable
    ) -> None:
        self.array = array
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.chunks = (int(chunks[0]), int(chunks[1]))
        self.cache = cache
        self.key = key

    def _chunk(self, iy: int, ix: int) -> np.ndarray:
        ck = (self.key, iy, ix)
        tile = self.cache.get(ck)
        if tile is None:
            ch, cw = self.chunks
            tile = np.ascontiguousarray(
                self.array[iy * ch : (iy + 1) * ch, ix * cw : (ix + 1) * cw],
                dtype=np.uint8,
            )
            self.cache.put(ck, tile)
        return tile

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return pixels ``[y0, y1) x [x0, x1)`` (inside the image)."""
        ch, cw = self.chunks
        iys = range(y0 // ch, (y1 - 1) // ch + 1)
        ixs = range(x0 // cw, (x1 - 1) // cw + 1)
        if len(iys) * len(ixs) > 16:  # large read: one zarr call, no caching
            return np.asarray(self.array[y0:y1, x0:x1], dtype=np.uint8)
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for iy in iys:
            for ix in ixs:
                tile = self._chunk(iy, ix)
                ty0, tx0 = iy * ch, ix * cw
                sy0, sy1 = max(y0, ty0), min(y1, ty0 + tile.shape[0])
                sx0, sx1 = max(x0, tx0), min(x1, tx0 + tile.shape[1])
                out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = tile[
                    sy0 - ty0 : sy1 - ty0, sx0 - tx0 : sx1 - tx0
                ]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        return getitem_via_read(self, key)


def check_mpp(mpp: Any, what: str = "mpp") -> float:
    """Validate a pixel size in um/px (``what`` names it in the error)."""
    try:
        value = float(mpp)
    except (TypeError, ValueError) as err:
        msg = f"{what} must be a number of micrometres per pixel, got {mpp!r}"
        raise BadInputError(msg) from err
    if not math.isfinite(value) or not 0 < value < 1000:
        msg = f"{what} must be a positive pixel size in um/px (e.g. 0.5), got {mpp!r}"
        raise BadInputError(msg)
    return value


def level_downsample(shape0: tuple[int, ...], shape: tuple[int, ...]) -> float:
    """Level-0 px per level px; snapped to an integer when the level is one."""
    dy, dx = shape0[0] / shape[0], shape0[1] / shape[1]
    d = (dx + dy) / 2
    r = round(d)
    if r >= 1 and abs(d - r) / d < 0.01:
        ok_h = shape[0] in (shape0[0] // r, -(-shape0[0] // r))
        ok_w = shape[1] in (shape0[1] // r, -(-shape0[1] // r))
        if ok_h and ok_w:
            return float(r)
    return float(d)
