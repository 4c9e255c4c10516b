"""Write a tiled pyramidal TIFF ("generic tiled TIFF") tile by tile.

Layout: level 0 is the first page; each reduced level (size halved, rounded up) is
a further top-level page with ``NewSubfileType = 1`` (reduced resolution), all
tiled, until a level fits in one tile. This is the layout OpenSlide reads as a
"generic tiled TIFF"; tifffile and QuPath read it too. The pixel size is stored twice:
in the resolution tags (``ResolutionUnit`` = centimetre) and as ``MPP = <um/px>`` in
the first page's ``ImageDescription`` (the Aperio spelling that readers already parse).

Pixels are streamed: each output tile is read from the source (from the source
level whose downsample matches, or by area-averaging a finer one), so a
100k x 100k slide is written without holding it in memory. The file is written
under a temporary name and renamed into place when complete.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError, OutputPathError
from napari_seal.io.slide.source import LevelSource, block_mean, check_mpp, read_window
from napari_seal.progress import Progress

__all__ = ["write_pyramidal_tiff"]

_COMPRESSIONS = {
    "jpeg": "jpeg",
    "zlib": "zlib",
    "deflate": "zlib",
    "zstd": "zstd",
    "lzw": "lzw",
    "webp": "webp",
    "none": None,
}
#: Reduced levels up to this size are also kept in memory to build the next one.
_KEEP_LEVEL_BYTES = 256 * 2**20


def _level_shapes(h: int, w: int, tile_px: int) -> list[tuple[int, int]]:
    shapes = [(h, w)]
    while max(shapes[-1]) > tile_px:
        ph, pw = shapes[-1]
        shapes.append((-(-ph // 2), -(-pw // 2)))
    return shapes


def _as_slide(source: Any) -> Any:
    from napari_seal.io.slide.core import Slide

    if isinstance(source, Slide):
        return source
    return Slide.from_array(source, mpp=None, name="array")


class _LevelTiles:
    """Produces the tiles of one output level from a source level."""

    def __init__(
        self,
        src: LevelSource,
        factor: float,
        shape: tuple[int, int],
        tile_px: int,
        keep: np.ndarray | None,
    ) -> None:
        self.src = src
        self.factor = factor
        self.shape = shape
        self.tile_px = tile_px
        self.keep = keep  # filled with this level's pixels when not None

    def _tile(self, ty: int, tx: int) -> np.ndarray:
        t = self.tile_px
        f = self.factor
        fi = round(f)
        if abs(f - fi) < 1e-6 and fi >= 1:
            y0, x0 = ty * t * fi, tx * t * fi
            tile = read_window(self.src, y0, y0 + t * fi, x0, x0 + t * fi)
            return block_mean(tile, fi) if fi > 1 else tile
        from PIL import Image

        by0, bx0 = ty * t * f, tx * t * f
        iy0, ix0 = math.floor(by0), math.floor(bx0)
        iy1, ix1 = math.ceil(by0 + t * f) + 1, math.ceil(bx0 + t * f) + 1
        region = read_window(self.src, iy0, iy1, ix0, ix1)
        box = (bx0 - ix0, by0 - iy0, bx0 - ix0 + t * f, by0 - iy0 + t * f)
        out = Image.fromarray(region).resize(
            (t, t), resample=Image.Resampling.BOX, box=box
        )
        return np.asarray(out)

    def __iter__(self) -> Iterator[np.ndarray]:
        t = self.tile_px
        h, w = self.shape
        for ty in range(-(-h // t)):
            for tx in range(-(-w // t)):
                tile = self._tile(ty, tx)
                vh, vw = min(t, h - ty * t), min(t, w - tx * t)
                if vh < t or vw < t:  # outside the image: white padding
                    tile = tile.copy()
                    tile[vh:, :] = 255
                    tile[:, vw:] = 255
                if self.keep is not None:
                    self.keep[ty * t : ty * t + vh, tx * t : tx * t + vw] = tile[
                        :vh, :vw
                    ]
                yield np.ascontiguousarray(tile)


def write_pyramidal_tiff(
    path: str | Path,
    source: Any,
    *,
    mpp: float,
    tile_px: int = 512,
    compression: str = "jpeg",
    quality: int = 90,
    progress: Callable[[Progress], None] | None = None,
) -> Path:
    """Write ``source`` as a tiled pyramidal TIFF with its pixel size.

    Parameters
    ----------
    path
        Output ``.tif`` path (written atomically; an existing file is replaced).
    source
        A :class:`~napari_seal.io.slide.core.Slide` (its pyramid levels are reused), or
        an ``(H, W, 3)`` uint8 numpy/dask array.
    mpp
        Micrometres per level-0 pixel, stored in the resolution tags and description.
    tile_px
        Tile side (a multiple of 16).
    compression
        ``"jpeg"`` (default, YCbCr 4:2:0 like SVS), ``"zlib"``/``"deflate"``,
        ``"zstd"``, ``"lzw"``, ``"webp"`` or ``"none"``.
    quality
        JPEG/WebP quality (1-100).
    progress
        Optional callback receiving :class:`~napari_seal.progress.Progress` events
        (one per written level).

    Returns
    -------
    The written path.
    """
    import tifffile

    from napari_seal.io.atomic import atomic_path

    path = Path(path)
    mpp = check_mpp(mpp)
    tile_px = int(tile_px)
    if tile_px < 16 or tile_px % 16:
        msg = f"tile_px must be a positive multiple of 16 (TIFF tiles), got {tile_px}"
        raise BadInputError(msg)
    key = (compression or "none").lower()
    if key not in _COMPRESSIONS:
        msg = f"unknown compression {compression!r}; use one of {sorted(_COMPRESSIONS)}"
        raise BadInputError(msg)
    if not 1 <= int(quality) <= 100:
        msg = f"quality must be in 1..100, got {quality}"
        raise BadInputError(msg)
    slide = _as_slide(source)
    if (
        slide.path is not None
        and path.exists()
        and path.resolve() == slide.path.resolve()
    ):
        msg = (
            f"refusing to overwrite the input slide {path}; choose another output path"
        )
        raise OutputPathError(msg)
    h, w = slide.height_px, slide.width_px
    shapes = _level_shapes(h, w, tile_px)
    raw_bytes = sum(a * b * 3 for a, b in shapes)
    bigtiff = raw_bytes > 2**32 - 2**26 or os.environ.get("NAPARI_SEAL_BIGTIFF") == "1"
    comp = _COMPRESSIONS[key]
    comp_args = {"level": int(quality)} if comp in ("jpeg", "webp") else None
    description = (
        f"napari-seal pyramidal TIFF {w}x{h} ({len(shapes)} levels)|MPP = "
        f"{mpp:.9g}|tile = {tile_px}"
    )
    try:
        with (
            atomic_path(path, suffix=".tif") as tmp,
            tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw,
        ):
            prev: np.ndarray | None = None
            for k, (lh, lw) in enumerate(shapes):
                want = float(2**k)
                j = slide.level_for_downsample(want)
                d = slide.downsamples[j]
                if k > 0 and prev is not None and abs(d - want) > 1e-6:
                    src: LevelSource = _NumpySource(prev)
                    factor = 2.0
                else:
                    src = slide._sources[j]
                    factor = want / d
                level_bytes = lh * lw * 3
                keep = (
                    np.empty((lh, lw, 3), np.uint8)
                    if k > 0
                    and level_bytes <= _KEEP_LEVEL_BYTES
                    and k + 1 < len(shapes)
                    else None
                )
                tiles = _LevelTiles(src, factor, (lh, lw), tile_px, keep)
                res = 1e4 / (mpp * (w / lw))  # pixels per cm of this level
                extra = (
                    {"description": description, "metadata": None}
                    if k == 0
                    else {"subfiletype": 1, "metadata": None}
                )
                tw.write(
                    iter(tiles),
                    shape=(lh, lw, 3),
                    dtype=np.uint8,
                    tile=(tile_px, tile_px),
                    photometric="rgb",
                    compression=comp,
                    compressionargs=comp_args,
                    resolution=(res, res),
                    resolutionunit="CENTIMETER",
                    software="napari-seal",
                    **extra,
                )
                prev = keep
                if progress is not None:
                    progress(
                        Progress(
                            "write-tiff", done=k + 1, total=len(shapes), unit="levels"
                        )
                    )
    except OSError as err:
        if isinstance(err, OutputPathError):
            raise
        msg = (
            f"cannot write {path}: {err.strerror or err}; free disk space or choose "
            "another path"
        )
        raise OutputPathError(msg) from err
    return path


class _NumpySource:
    """Level-source view of an in-memory level."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = 3
        self.chunks = (512, 512)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.array[y0:y1, x0:x1]

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.array[key]
