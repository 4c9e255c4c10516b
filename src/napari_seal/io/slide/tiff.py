"""TIFF-family slides (generic pyramidal TIFF, OME-TIFF, SVS, NDPI...) via tifffile.

Each pyramid level is a :class:`TiffLevel`: it reads only the tiles (or strips) a
request touches, straight from the file, decodes them with tifffile's codecs and keeps
recently used tiles in a small LRU cache. Levels are picklable (they re-open the file
by path), so dask graphs built on them can run in other processes.
"""

from __future__ import annotations

import logging
import math
import re
import struct
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_seal.errors import SlideReadError
from napari_seal.io.slide.source import (
    MAX_SIDE_PX,
    TileCache,
    available_memory_bytes,
    getitem_via_read,
)

__all__ = [
    "TiffHandle",
    "TiffLevel",
    "TiffSlideInfo",
    "TiffUnreadableError",
    "open_tiff_levels",
]

logger = logging.getLogger(__name__)

#: Plausible brightfield pixel sizes (um/px); metadata outside is ignored.
MPP_RANGE = (0.05, 20.0)

# errors tifffile / imagecodecs raise on invalid or truncated files
_READ_ERRORS = (
    tifffile.TiffFileError,
    OSError,
    ValueError,
    struct.error,
    IndexError,
    KeyError,
    RuntimeError,
    NotImplementedError,
    TypeError,
    ZeroDivisionError,  # a zero TileLength/TileWidth/RowsPerStrip in a damaged header
)

_OME_UNITS_UM = {
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "micrometer": 1.0,
    "nm": 1e-3,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
    "pm": 1e-6,
    "Å": 1e-4,
}

_MPP_RE = re.compile(
    r"\bMPP\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)", re.IGNORECASE
)


class TiffUnreadableError(SlideReadError):
    """tifffile cannot parse or decode the file (OpenSlide may still read it)."""


class TiffHandle:
    """A shared, lazily (re)opened ``tifffile.TiffFile`` plus a tile cache.

    Pickling keeps only the path; the file is opened again on first use.
    """

    def __init__(self, path: Path, *, cache_bytes: int = 96 * 2**20) -> None:
        self.path = Path(path)
        self.cache = TileCache(cache_bytes)
        self._tif: tifffile.TiffFile | None = None
        self._pages: dict[tuple[int, int], Any] = {}
        self._lock = threading.RLock()

    @property
    def tif(self) -> tifffile.TiffFile:
        """The open ``TiffFile`` (opened read-only on first access).

        Reads from several threads are safe: the file handle gets a real lock (seek +
        read are atomic) and the series are parsed once, here, under our lock.
        """
        tif = self._tif
        if tif is None:
            with self._lock:
                if self._tif is None:
                    tif = tifffile.TiffFile(self.path, mode="rb")
                    tif.filehandle.set_lock(True)
                    _ = tif.series
                    self._pages = {}
                    self._tif = tif
                tif = self._tif
        return tif

    def page(self, series: int, level: int) -> Any:
        """The first page of pyramid ``level`` of ``series`` (thread-safe, cached)."""
        tif = self.tif
        with self._lock:
            page = self._pages.get((series, level))
            if page is None:
                page = tif.series[series].levels[level].pages[0]
                self._pages[(series, level)] = page
            return page

    def close(self) -> None:
        """Close the file (it is re-opened if used again)."""
        with self._lock:
            if self._tif is not None:
                self._tif.close()
                self._tif = None
                self._pages = {}
        self.cache.clear()

    def __getstate__(self) -> dict:
        return {"path": self.path, "cache_bytes": self.cache.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], cache_bytes=state["cache_bytes"])


class TiffLevel:
    """One pyramid level of a TIFF series, read tile by tile.

    Parameters
    ----------
    handle
        The shared file handle.
    series, level
        Which series of the file and which of its pyramid levels.
    """

    def __init__(self, handle: TiffHandle, series: int, level: int) -> None:
        self.handle = handle
        self.series = series
        self.level = level
        page = self.page
        self.shape = (int(page.imagelength), int(page.imagewidth), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.samples = int(page.samplesperpixel)
        self.planar = page.planarconfig == 2 and self.samples > 1
        if page.is_tiled:
            self.seg = (int(page.tilelength), int(page.tilewidth))
        else:
            rps = int(min(page.rowsperstrip or page.imagelength, page.imagelength))
            self.seg = (max(1, rps), int(page.imagewidth))
        self.grid = (
            math.ceil(self.shape[0] / self.seg[0]),
            math.ceil(self.shape[1] / self.seg[1]),
        )
        if page.is_tiled:
            cy = self.seg[0] * max(1, math.ceil(256 / self.seg[0]))
            cx = self.seg[1] * max(1, math.ceil(256 / self.seg[1]))
        else:
            cy = self.seg[0] * max(1, math.ceil(256 / self.seg[0]))
            cx = min(self.shape[1], 1024)
        self.chunks = (cy, cx)

    @property
    def page(self) -> Any:
        """The tifffile page of this level."""
        return self.handle.page(self.series, self.level)

    def __getstate__(self) -> dict:
        return {"handle": self.handle, "series": self.series, "level": self.level}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["handle"], state["series"], state["level"])

    # -- decoding -------------------------------------------------------------
    def _decode_segments(self, indices: list[int]) -> dict[int, np.ndarray | None]:
        page = self.page
        key = page.keyframe if hasattr(page, "keyframe") else page
        fh = self.handle.tif.filehandle
        offsets = [int(page.dataoffsets[i]) for i in indices]
        counts = [int(page.databytecounts[i]) for i in indices]
        decodeargs: dict[str, Any] = {"_fullsize": bool(key.is_tiled)}
        if key.compression in {6, 7, 34892, 33007}:
            decodeargs["jpegtables"] = page.jpegtables
            decodeargs["jpegheader"] = key.jpegheader
        decode = key.decode
        out: dict[int, np.ndarray | None] = {}
        for data, index in fh.read_segments(
            offsets, counts, indices=indices, sort=True, lock=fh.lock, flat=True
        ):
            seg, _, _ = decode(data, index, **decodeargs)
            out[index] = None if seg is None else seg[0]
        return out

    def _tile(self, iy: int, ix: int) -> np.ndarray:
        """Decoded RGB tile ``(seg_rows, seg_cols, 3)`` at grid position (iy, ix)."""
        ck = (self.series, self.level, iy, ix)
        tile = self.handle.cache.get(ck)
        if tile is not None:
            return tile
        try:
            tile = self._decode_tile(iy, ix)
        except _READ_ERRORS as err:
            # a damaged tile in the middle of the file is only found when read
            msg = (
                f"cannot decode tile ({iy}, {ix}) of level {self.level} of "
                f"{self.handle.path} ({type(err).__name__}: {err}); the file is "
                "corrupt: copy or download it again"
            )
            raise TiffUnreadableError(msg) from err
        self.handle.cache.put(ck, tile)
        return tile

    def _decode_tile(self, iy: int, ix: int) -> np.ndarray:
        ny, nx = self.grid
        base = iy * nx + ix
        if self.planar:
            idx = [s * ny * nx + base for s in range(3)]
            segs = self._decode_segments(idx)
            if any(segs[i] is None for i in idx):
                tile = np.full((*self.seg, 3), 255, np.uint8)
            else:
                tile = np.concatenate([segs[i][..., :1] for i in idx], axis=-1)
        else:
            seg = self._decode_segments([base])[base]
            if seg is None:  # sparse (empty) tile: background
                tile = np.full((*self.seg, 3), 255, np.uint8)
            else:
                tile = seg[..., :3]
        return np.ascontiguousarray(tile, dtype=np.uint8)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return pixels ``[y0, y1) x [x0, x1)`` (inside the image) as uint8 RGB."""
        th, tw = self.seg
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for iy in range(y0 // th, (y1 - 1) // th + 1):
            ty0 = iy * th
            for ix in range(x0 // tw, (x1 - 1) // tw + 1):
                tx0 = ix * tw
                tile = self._tile(iy, ix)
                sy0, sy1 = max(y0, ty0), min(y1, ty0 + th, ty0 + tile.shape[0])
                sx0, sx1 = max(x0, tx0), min(x1, tx0 + tw, tx0 + tile.shape[1])
                out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = tile[
                    sy0 - ty0 : sy1 - ty0, sx0 - tx0 : sx1 - tx0
                ]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        return getitem_via_read(self, key)

    def check(self) -> None:
        """Check that every segment lies inside the file and the first/last decode."""
        page = self.page
        size = self.handle.tif.filehandle.size
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        if offsets.size and int((offsets + counts).max()) > size:
            msg = (
                f"{self.handle.path}: image data extends past the end of the file; the "
                "file is truncated (an incomplete download or copy?): copy or "
                "download it again"
            )
            raise SlideReadError(msg)
        ny, nx = self.grid
        for iy, ix in {(0, 0), (ny - 1, nx - 1)}:
            self._tile(iy, ix)


@dataclass
class TiffSlideInfo:
    """What :func:`open_tiff_levels` found in a TIFF file."""

    kind: str
    levels: list[TiffLevel]
    mpp: float | None
    handle: TiffHandle
    metadata: dict[str, Any] = field(default_factory=dict)


def _plausible(mpp: float | None, what: str) -> float | None:
    if mpp is None or not math.isfinite(mpp):
        return None
    if MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
        return float(mpp)
    logger.warning("ignoring implausible pixel size %.4g um/px from %s", mpp, what)
    return None


def _mpp_from_ome(xml: str) -> float | None:
    try:
        root = ET.fromstring(xml)  # noqa: S314 - local file, no entity expansion in ET
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] == "Pixels" and "PhysicalSizeX" in el.attrib:
            unit = el.attrib.get("PhysicalSizeXUnit", "µm")
            factor = _OME_UNITS_UM.get(unit)
            if factor is None:
                logger.warning("unknown OME PhysicalSizeXUnit %r; ignoring it", unit)
                return None
            try:
                value = float(el.attrib["PhysicalSizeX"]) * factor
            except ValueError:
                return None
            return _plausible(value, "OME PhysicalSizeX")
    return None


def _mpp_from_resolution(page: Any) -> float | None:
    tags = page.tags
    if "XResolution" not in tags:
        return None
    unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
    num, den = (
        tags["XResolution"].value
        if isinstance(tags["XResolution"].value, tuple)
        else (tags["XResolution"].value, 1)
    )
    if not den or not num:
        return None
    res = num / den  # pixels per unit
    if unit == 2:  # inch
        if abs(res - 72.0) < 1e-6 or abs(res - 96.0) < 1e-6:
            return None  # the usual "no resolution" defaults
        return _plausible(25400.0 / res, "TIFF XResolution (inch)")
    if unit == 3:  # centimetre
        return _plausible(10000.0 / res, "TIFF XResolution (cm)")
    return None


def mpp_from_tiff(tif: tifffile.TiffFile, page: Any) -> float | None:
    """Pixel size from (in order) ``MPP =`` in the description, OME, resolution tags."""
    desc = page.description or ""
    m = _MPP_RE.search(desc)
    if m:
        mpp = _plausible(float(m.group(1)), "the ImageDescription MPP")
        if mpp is not None:
            return mpp
    if tif.is_ome and tif.ome_metadata:
        mpp = _mpp_from_ome(tif.ome_metadata)
        if mpp is not None:
            return mpp
    return _mpp_from_resolution(page)


def _check_rgb(series: Any, page: Any, path: Path) -> None:
    """Raise when the series is not an 8-bit RGB(A) brightfield image."""
    expect = (
        "napari-seal expects an RGB brightfield H&E slide (8-bit, 3 samples per pixel)"
    )
    spp = int(page.samplesperpixel)
    shape = tuple(series.shape)
    photometric = int(page.photometric)
    extra = [
        d
        for d, ax in zip(shape, series.axes, strict=False)
        if ax not in "YXS" and d != 1
    ]
    if spp not in (3, 4) or photometric not in (2, 6) or extra:
        if spp == 1 and photometric in (0, 1):
            what = "a grayscale image"
            if extra or "C" in series.axes:
                what = (
                    f"a multi-channel (fluorescence-like) image of shape {shape} "
                    f"({series.axes})"
                )
        elif spp == 2:
            what = "a 2-channel image"
        elif photometric == 3:
            what = "a palette (indexed-colour) image"
        else:
            what = (
                f"an image with {spp} samples per pixel, shape {shape} ({series.axes})"
            )
        msg = f"{path} is {what}; {expect}. Convert it to RGB first."
        raise SlideReadError(msg)
    if page.dtype != np.uint8:
        msg = (
            f"{path} stores {page.dtype} samples; {expect}. Convert it to 8-bit RGB "
            "(e.g. with QuPath or `vips`) first."
        )
        raise SlideReadError(msg)


def _main_series(tif: tifffile.TiffFile) -> int:
    """Index of the main image series (skip label/macro/thumbnail images)."""
    best, best_px = 0, -1
    for i, s in enumerate(tif.series):
        name = (s.name or "").lower()
        if name in {"label", "macro", "thumbnail", "overview"}:
            continue
        px = int(s.levels[0].keyframe.imagelength) * int(
            s.levels[0].keyframe.imagewidth
        )
        if px > best_px:
            best, best_px = i, px
    return best


def open_tiff_levels(path: Path) -> TiffSlideInfo:
    """Open a TIFF-family slide; validate it; return its levels and pixel size.

    Raises
    ------
    SlideReadError
        Not a readable TIFF, truncated, corrupt, not RGB, or absurdly large.
    """
    handle = TiffHandle(path)
    try:
        tif = handle.tif
        series_index = _main_series(tif)
        series = tif.series[series_index]
        page = series.levels[0].pages[0]
    except _READ_ERRORS as err:
        handle.close()
        msg = (
            f"cannot read {path} as a TIFF slide ({err}); the file may be truncated or "
            "corrupt"
        )
        raise TiffUnreadableError(msg) from err
    try:
        h, w = int(page.imagelength), int(page.imagewidth)
        if not (0 < h <= MAX_SIDE_PX and 0 < w <= MAX_SIDE_PX):
            msg = (
                f"{path} claims an image of {w} x {h} px, outside 1..{MAX_SIDE_PX} px "
                "per side; the header is corrupt"
            )
            raise SlideReadError(msg)
        _check_rgb(series, page, path)
        levels = []
        for li, lvl in enumerate(series.levels):
            if len(lvl.pages) < 1 or lvl.pages[0] is None:
                continue
            level = TiffLevel(handle, series_index, li)
            seg_bytes = level.seg[0] * level.seg[1] * 3 * 2
            if seg_bytes > available_memory_bytes() // 2:
                msg = (
                    f"{path}: decoding one {level.seg[1]} x {level.seg[0]} px "
                    f"strip/tile needs {seg_bytes / 2**30:.1f} GiB, more than the free "
                    "memory; convert the slide to a tiled pyramidal TIFF (e.g. `vips "
                    "tiffsave --tile --pyramid`)"
                )
                raise SlideReadError(msg)
            levels.append(level)
        levels[0].check()
        if len(levels) > 1:
            levels[-1].check()
        mpp = mpp_from_tiff(tif, page)
        if tif.is_svs:
            kind = "svs"
        elif tif.is_ome:
            kind = "ome-tiff"
        else:
            kind = "tiff"
        meta = {
            "series": series_index,
            "axes": series.axes,
            "description": (page.description or "")[:500],
        }
    except SlideReadError:
        handle.close()
        raise
    except _READ_ERRORS as err:
        handle.close()
        msg = (
            f"cannot decode {path} ({type(err).__name__}: {err}); the file is "
            "truncated or corrupt"
        )
        raise TiffUnreadableError(msg) from err
    return TiffSlideInfo(
        kind=kind, levels=levels, mpp=mpp, handle=handle, metadata=meta
    )
