"""Whole-slide images as lazy multiscale dask pyramids.

:func:`open_slide` opens SVS, generic pyramidal TIFF, OME-TIFF and other
TIFF-family files with tifffile (OpenSlide only for formats tifffile cannot read and
only when it is installed), and flat JPEG/PNG images through a zarr pyramid cache
that is built once (see :mod:`napari_seal.io.slide.flat`).

Coordinates: ``(x, y)`` are level-0 pixel coordinates (column, row). For the
sub-pixel geometry of :meth:`Slide.read_patch`, pixel ``(i, j)`` covers
``[i, i + 1) x [j, j + 1)``: a patch centred on ``(cx, cy)`` covers
``[cx - fov / 2, cx + fov / 2)``, so with integer ``cx`` and an even ``size_px`` at
the slide's own resolution the patch is exactly the pixels ``cx - size/2`` to
``cx + size/2 - 1`` and its pixel ``size_px // 2`` is the slide pixel ``cx``.
"""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError, MppUnknownError, SlideReadError
from napari_seal.io.slide.source import (
    ArraySource,
    LevelSource,
    block_mean,
    check_mpp,
    level_downsample,
    read_window,
)

__all__ = [
    "MPP_SOURCES",
    "Slide",
    "open_slide",
]

logger = logging.getLogger(__name__)

MPP_SOURCES = ("metadata", "user", "estimated", "unknown")
_THUMB_READ_BYTES = 256 * 2**20


class Slide:
    """A lazy multiscale RGB slide (level 0 = full resolution).

    Use :func:`open_slide` or :meth:`Slide.from_array` to make one.

    Attributes
    ----------
    path
        The image file (``None`` for in-memory arrays).
    kind
        ``"tiff"``, ``"ome-tiff"``, ``"svs"``, ``"openslide"``, ``"jpeg"``, ``"png"``
        or ``"array"``.
    levels
        One ``(H, W, 3)`` uint8 dask array per level, level 0 first.
    downsamples
        Level-0 pixels per level pixel (``downsamples[0] == 1.0``).
    mpp
        Micrometres per level-0 pixel, or ``None`` when unknown.
    mpp_source
        ``"metadata"``, ``"user"``, ``"estimated"`` or ``"unknown"``.
    name
        Short name (the file stem).
    """

    def __init__(
        self,
        sources: list[LevelSource],
        *,
        path: Path | None,
        kind: str,
        mpp: float | None,
        mpp_source: str,
        name: str,
        identity: dict,
        downsamples: list[float] | None = None,
        levels: list[Any] | None = None,
        handle: Any = None,
        metadata: dict | None = None,
    ) -> None:
        import dask.array as da

        self._sources = list(sources)
        self.path = path
        self.kind = kind
        self.mpp = mpp
        self.mpp_source = mpp_source if mpp is not None else "unknown"
        self.name = name
        self._identity = dict(identity)
        self._handle = handle
        self.metadata = dict(metadata or {})
        shape0 = self._sources[0].shape
        self.downsamples = (
            list(downsamples)
            if downsamples is not None
            else [level_downsample(shape0, s.shape) for s in self._sources]
        )
        self.downsamples[0] = 1.0
        if levels is None:
            token = str(self._identity.get("token") or _token(self._identity))
            meta = np.empty((0, 0, 0), np.uint8)
            levels = [
                da.from_array(
                    src,
                    chunks=(src.chunks[0], src.chunks[1], 3),
                    name=f"napari-seal-slide-{token}-{i}",
                    lock=False,
                    asarray=False,
                    fancy=False,
                    meta=meta,
                )
                for i, src in enumerate(self._sources)
            ]
        self.levels = list(levels)

    # -- basic properties -----------------------------------------------------
    @property
    def width_px(self) -> int:
        """Level-0 width in pixels."""
        return int(self._sources[0].shape[1])

    @property
    def height_px(self) -> int:
        """Level-0 height in pixels."""
        return int(self._sources[0].shape[0])

    @property
    def n_levels(self) -> int:
        """Number of pyramid levels."""
        return len(self._sources)

    def __repr__(self) -> str:
        mpp = f"{self.mpp:.4g} um/px ({self.mpp_source})" if self.mpp else "mpp unknown"
        return (
            f"Slide({self.name!r}, kind={self.kind!r}, {self.width_px} x "
            f"{self.height_px} px, {self.n_levels} levels, {mpp})"
        )

    # -- pixel size -----------------------------------------------------------
    def with_mpp(self, mpp: float, *, source: str) -> Slide:
        """Return a copy with pixel size ``mpp`` (um per level-0 px) from ``source``."""
        if source not in MPP_SOURCES or source == "unknown":
            msg = (
                "mpp source must be one of 'metadata', 'user', 'estimated', got "
                f"{source!r}"
            )
            raise BadInputError(msg)
        new = copy.copy(self)
        new.mpp = check_mpp(mpp)
        new.mpp_source = source
        return new

    def require_mpp(self) -> float:
        """The pixel size; else raise :class:`MppUnknownError` saying how to set it."""
        if self.mpp is None:
            msg = (
                f"the pixel size of {self.path or self.name} is unknown (its file "
                "stores none; JPEG/PNG dpi headers are not pixel sizes): pass --mpp "
                "UM (micrometres per pixel, e.g. --mpp 0.5; in Python open_slide(..., "
                "mpp=0.5)), or import it with an ST sample so the pixel size is "
                "estimated from the spot grid"
            )
            raise MppUnknownError(msg)
        return float(self.mpp)

    def level_mpp(self, level: int) -> float:
        """Micrometres per pixel of ``level`` (requires mpp)."""
        return self.require_mpp() * self.downsamples[level]

    def level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample``."""
        best = 0
        for i, d in enumerate(self.downsamples):
            if d <= downsample * (1 + 1e-3):
                best = i
        return best

    def level_for_mpp(self, mpp_out: float) -> int:
        """The coarsest level that is still at least as fine as ``mpp_out``."""
        return self.level_for_downsample(mpp_out / self.require_mpp())

    # -- reading --------------------------------------------------------------
    def _level_index(self, level: int) -> int:
        if not -self.n_levels <= level < self.n_levels:
            msg = (
                f"level {level} does not exist; this slide has levels "
                f"0..{self.n_levels - 1}"
            )
            raise BadInputError(msg)
        return level % self.n_levels

    def read_region(
        self, x_px: int, y_px: int, w_px: int, h_px: int, *, level: int = 0
    ) -> np.ndarray:
        """Read a rectangle of one level.

        Parameters
        ----------
        x_px, y_px
            Level-0 coordinates of the top-left corner.
        w_px, h_px
            Size in pixels of ``level``.
        level
            Pyramid level.

        Returns
        -------
        ``(h_px, w_px, 3)`` uint8; pixels outside the image are white.
        """
        level = self._level_index(level)
        if w_px < 0 or h_px < 0:
            msg = f"region size must be non-negative, got {w_px} x {h_px}"
            raise BadInputError(msg)
        d = self.downsamples[level]
        lx, ly = math.floor(x_px / d), math.floor(y_px / d)
        return read_window(self._sources[level], ly, ly + int(h_px), lx, lx + int(w_px))

    def read_patch(
        self, cx_px: float, cy_px: float, *, size_px: int, mpp_out: float
    ) -> np.ndarray:
        """Read a square patch at a given resolution, centred on a level-0 point.

        The patch covers ``size_px * mpp_out`` micrometres. It is read from the
        coarsest level that is still at least as fine as ``mpp_out`` and resampled
        with area averaging (downscaling) or bilinear interpolation (upscaling).

        Parameters
        ----------
        cx_px, cy_px
            Centre in level-0 pixel coordinates (see the module docstring).
        size_px
            Output side in pixels.
        mpp_out
            Output resolution in micrometres per pixel.

        Returns
        -------
        ``(size_px, size_px, 3)`` uint8; outside the image is white.
        """
        from PIL import Image

        size_px = int(size_px)
        if size_px < 1:
            msg = f"size_px must be a positive number of pixels, got {size_px}"
            raise BadInputError(msg)
        mpp_out = check_mpp(mpp_out, "mpp_out")
        level = self.level_for_mpp(mpp_out)
        d = self.downsamples[level]
        half = size_px * mpp_out / self.require_mpp() / 2
        bx0, bx1 = (cx_px - half) / d, (cx_px + half) / d
        by0, by1 = (cy_px - half) / d, (cy_px + half) / d
        src = self._sources[level]
        scale = (bx1 - bx0) / size_px  # level px per output px
        rx0, ry0 = round(bx0), round(by0)
        if abs(scale - 1) < 1e-6 and abs(bx0 - rx0) < 1e-6 and abs(by0 - ry0) < 1e-6:
            return read_window(src, ry0, ry0 + size_px, rx0, rx0 + size_px)
        ix0, iy0 = math.floor(bx0) - 2, math.floor(by0) - 2
        ix1, iy1 = math.ceil(bx1) + 2, math.ceil(by1) + 2
        region = read_window(src, iy0, iy1, ix0, ix1)
        resample = Image.Resampling.BOX if scale > 1 else Image.Resampling.BILINEAR
        box = (bx0 - ix0, by0 - iy0, bx1 - ix0, by1 - iy0)
        out = Image.fromarray(region).resize(
            (size_px, size_px), resample=resample, box=box
        )
        return np.asarray(out)

    def thumbnail(self, *, max_px: int = 1024) -> np.ndarray:
        """Return the whole slide with its longest side at most ``max_px`` pixels.

        Reads the coarsest level that is still at least as large as the thumbnail
        (in bands when that level is large, so memory stays bounded).
        """
        max_px = int(max_px)
        if max_px < 1:
            msg = f"max_px must be positive, got {max_px}"
            raise BadInputError(msg)
        from PIL import Image

        w0, h0 = self.width_px, self.height_px
        scale = min(1.0, max_px / max(w0, h0))
        tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
        level = 0
        for i, src in enumerate(self._sources):
            if src.shape[1] >= tw and src.shape[0] >= th:
                level = i
        src = self._sources[level]
        lh, lw = src.shape[0], src.shape[1]
        if lh * lw * 3 <= _THUMB_READ_BYTES:
            arr = src.read(0, lh, 0, lw)
        else:
            f = max(1, min(lw // tw, lh // th))
            band = f * max(1, _THUMB_READ_BYTES // 4 // (lw * 3 * f))
            parts = [
                block_mean(src.read(y, min(lh, y + band), 0, lw), f)
                for y in range(0, lh, band)
            ]
            arr = np.concatenate(parts, axis=0)
        if arr.shape[0] != th or arr.shape[1] != tw:
            arr = np.asarray(
                Image.fromarray(np.ascontiguousarray(arr)).resize(
                    (tw, th), resample=Image.Resampling.BOX
                )
            )
        return np.ascontiguousarray(arr, dtype=np.uint8)

    def identity(self) -> dict:
        """``{"path": resolved str, "size": bytes, "mtime": float}`` of the slide."""
        return dict(self._identity)

    def as_dask_pyramid(self) -> list[Any]:
        """The levels as dask arrays, for ``viewer.add_image(..., multiscale=True)``."""
        return list(self.levels)

    def close(self) -> None:
        """Release the open file (it is re-opened if the slide is read again)."""
        if self._handle is not None:
            self._handle.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_array(cls, array: Any, *, mpp: float | None, name: str = "array") -> Slide:
        """Wrap an in-memory image (tests, generated data) as a slide.

        Parameters
        ----------
        array
            ``(H, W, 3)`` (or RGBA) uint8 numpy/dask/zarr array, or a list of them
            forming a pyramid (level 0 first, each level smaller).
        mpp
            Micrometres per level-0 pixel (``None`` = unknown).
        name
            Slide name.
        """
        import dask.array as da
        from dask.base import tokenize

        arrays = list(array) if isinstance(array, (list, tuple)) else [array]
        sources, levels = [], []
        for a in arrays:
            a = a if hasattr(a, "shape") and hasattr(a, "dtype") else np.asarray(a)
            if a.ndim != 3 or a.shape[2] not in (3, 4) or np.dtype(a.dtype) != np.uint8:
                msg = (
                    "expected an (H, W, 3) uint8 RGB image, got shape "
                    f"{tuple(a.shape)} dtype {a.dtype}; napari-seal works on RGB "
                    "brightfield H&E images"
                )
                raise SlideReadError(msg)
            if a.shape[2] == 4:
                a = a[..., :3]
            if isinstance(a, da.Array):
                sources.append(ArraySource(a))
                levels.append(a)
            else:
                if isinstance(a, np.ndarray):
                    a = np.ascontiguousarray(a)
                src = ArraySource(a)
                sources.append(src)
                levels.append(
                    da.from_array(
                        a, chunks=(min(512, a.shape[0]), min(512, a.shape[1]), 3)
                    )
                )
        token = tokenize(*[lv.name for lv in levels])
        identity = {
            "path": None,
            "name": name,
            "size": int(sum(int(np.prod(s.shape)) for s in sources)),
            "mtime": 0.0,
            "token": token,
        }
        mpp_value = None if mpp is None else check_mpp(mpp)
        return cls(
            sources,
            path=None,
            kind="array",
            mpp=mpp_value,
            mpp_source="user" if mpp_value is not None else "unknown",
            name=name,
            identity=identity,
            levels=levels,
        )


def _token(identity: dict) -> str:
    from napari_seal.io.slide.flat import cache_key

    return cache_key(identity)


def open_slide(
    path: str | Path, *, mpp: float | None = None, cache_dir: str | Path | None = None
) -> Slide:
    """Open a whole-slide image lazily.

    Parameters
    ----------
    path
        SVS, generic pyramidal TIFF, OME-TIFF, NDPI (tifffile), other OpenSlide
        formats (when ``openslide`` is installed), or a flat JPEG/PNG.
    mpp
        Pixel size in micrometres per level-0 pixel; overrides the file's metadata
        (``mpp_source == "user"``).
    cache_dir
        Where flat JPEG/PNG pyramids are cached (default ``slides/`` in the
        workspace, :func:`napari_seal.io.workspace.workspace_root`).

    Returns
    -------
    The :class:`Slide`. Its mpp comes from (in order) ``mpp``, the file's metadata
    (SVS/our ``MPP =`` description, OME ``PhysicalSizeX``, TIFF resolution tags in
    cm or non-default inch), else it is ``None`` (``mpp_source == "unknown"``).

    Raises
    ------
    SlideReadError
        Missing, truncated, corrupt, non-RGB or absurdly large images, with a fix.
    """
    from napari_seal.io.slide.backends import open_levels

    path = Path(path).expanduser()
    user_mpp = None if mpp is None else check_mpp(mpp, "--mpp")
    opened = open_levels(path, cache_dir=None if cache_dir is None else Path(cache_dir))
    file_mpp = opened.mpp
    if user_mpp is not None:
        slide_mpp, source = user_mpp, "user"
    elif file_mpp is not None:
        slide_mpp, source = file_mpp, "metadata"
    else:
        slide_mpp, source = None, "unknown"
    return Slide(
        opened.sources,
        path=path,
        kind=opened.kind,
        mpp=slide_mpp,
        mpp_source=source,
        name=path.stem,
        identity=opened.identity,
        downsamples=opened.downsamples,
        handle=opened.handle,
        metadata=opened.metadata,
    )
