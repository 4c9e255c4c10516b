"""Flat JPEG/PNG slides: decoded once into a zarr pyramid cache.

A flat image has no pyramid and no random access, so the first open decodes it fully
(which also verifies it is not truncated), builds levels halving the size until the
longest side is under 512 px, and writes them as a zarr group (chunks 512 x 512 x 3)
under the cache folder. The folder is named after the slide identity (resolved path,
size, mtime), is built under a temporary name and renamed into place only when
complete, so every later open reads the cache and never decodes the file again.

Cache layout (zarr v3 group ``<stem>-<key>.zarr``)::

    attrs["napari_seal"] = {"format": 1, "identity": {...}, "kind": "jpeg",
                            "shape": [H, W], "n_levels": n, "complete": true}
    0/  (H, W, 3) uint8          level 0, full resolution
    1/  (ceil(H/2), ceil(W/2), 3) ...
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import shutil
import struct
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import OutputPathError, SlideReadError
from napari_seal.io.atomic import remove_stale_temporaries, temporary_prefix
from napari_seal.io.slide.source import (
    MAX_SIDE_PX,
    CachedChunkSource,
    TileCache,
    available_memory_bytes,
    block_mean,
)
from napari_seal.io.workspace import workspace_root

__all__ = ["CACHE_FORMAT", "CHUNK_PX", "default_cache_dir", "open_flat_levels"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
CHUNK_PX = 512
_PIL_LOCK = threading.Lock()

# Fewest file bytes per claimed pixel a real JPEG/PNG can have: deflate never
# compresses beyond ~1032:1 (PNG, >= 1 byte per pixel) and a blank baseline JPEG still
# costs ~1/64 byte per pixel. A smaller file is a corrupt header or a truncated file,
# refused before a decoder allocates (and fills with grey) the claimed size.
_MIN_BYTES_PER_PX = 1 / 1100
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def default_cache_dir() -> Path:
    """``slides/`` in the workspace (``napari_seal.io.workspace.workspace_root()``)."""
    return workspace_root() / "slides"


def cache_key(identity: dict) -> str:
    """Stable hex key of a slide identity."""
    blob = json.dumps(identity, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:24]


@contextlib.contextmanager
def _no_pil_pixel_limit() -> Iterator[None]:
    """Lift Pillow's decompression-bomb limit; we check sizes and memory ourselves."""
    from PIL import Image

    with _PIL_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def jpeg_is_complete(data: bytes) -> bool:
    """Walk a JPEG's marker segments and entropy-coded scans up to its EOI marker.

    Returns ``False`` when the data ends before the end-of-image marker (a
    truncated file); libjpeg would silently fill the missing part with grey.
    """
    n = len(data)
    if n < 4 or data[:2] != b"\xff\xd8":
        return False
    pos = 2
    while pos + 2 <= n:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            return True
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # standalone markers
            pos += 2
            continue
        if pos + 4 > n:
            return False
        length = (data[pos + 2] << 8) | data[pos + 3]
        pos += 2 + length
        if marker != 0xDA:  # not start-of-scan
            continue
        # entropy-coded data: runs until a marker other than FF00 / RSTn
        while True:
            pos = data.find(b"\xff", pos)
            if pos < 0 or pos + 1 >= n:
                return False
            nxt = data[pos + 1]
            if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
                pos += 1 if nxt == 0xFF else 2
                continue
            break
    return False


def _decode_flat(path: Path) -> np.ndarray:
    """Decode a JPEG/PNG fully into ``(H, W, 3)`` uint8, validating it first.

    The header is read (Pillow) and checked before any pixel buffer is allocated;
    JPEGs are checked for truncation, then decoded with libjpeg-turbo/libpng
    (imagecodecs) straight into numpy.

    Raises
    ------
    SlideReadError
        Truncated or corrupt data, non-RGB image, absurd size, not enough memory.
    """
    import imagecodecs
    from PIL import Image, UnidentifiedImageError

    errors = (
        OSError,
        SyntaxError,
        ValueError,
        struct.error,
        EOFError,
        UnidentifiedImageError,
    )
    corrupt = f"{path} is truncated or corrupt; copy or download it again"
    with _no_pil_pixel_limit():
        try:
            with Image.open(path) as im:
                (w, h), mode, fmt = im.size, im.mode, im.format
        except errors as err:
            msg = (
                f"cannot read {path} as an image ({err}); the file is corrupt or not a "
                "JPEG/PNG"
            )
            raise SlideReadError(msg) from err
    if not (0 < w <= MAX_SIDE_PX and 0 < h <= MAX_SIDE_PX):
        msg = (
            f"{path} claims {w} x {h} px, outside 1..{MAX_SIDE_PX} px per side; the "
            "header is corrupt"
        )
        raise SlideReadError(msg)
    if mode in _GRAY_MODES:
        msg = (
            f"{path} is a grayscale image (mode {mode}); napari-seal expects an RGB "
            "brightfield H&E image. Export the slide in colour (RGB)."
        )
        raise SlideReadError(msg)
    need = w * h * 5  # decoded 3 B/px + 4 B/px transient + pyramid, roughly
    free = available_memory_bytes()
    if need > 0.8 * free:
        msg = (
            f"{path} is {w} x {h} px; decoding it needs about {need / 2**30:.1f} GiB "
            f"but only {free / 2**30:.1f} GiB is free. Convert it to a tiled pyramidal "
            "TIFF (e.g. `vips tiffsave in.jpg out.tif --tile --pyramid`) and open "
            "that."
        )
        raise SlideReadError(msg)
    size = path.stat().st_size
    if size < w * h * _MIN_BYTES_PER_PX:
        msg = (
            f"{path} is {size} bytes but its header claims {w} x {h} px, which needs "
            f"at least {math.ceil(w * h * _MIN_BYTES_PER_PX)} bytes; the header is "
            "corrupt or the file is truncated: copy or download it again"
        )
        raise SlideReadError(msg)
    data = path.read_bytes()
    try:
        if fmt == "JPEG":
            if not jpeg_is_complete(data):
                msg = f"{corrupt} (the JPEG data ends before its end-of-image marker)"
                raise SlideReadError(msg)
            if mode == "RGB":
                arr = imagecodecs.jpeg8_decode(data)
            else:  # CMYK, YCCK...: let Pillow convert
                arr = _pil_decode_rgb(path)
        elif fmt == "PNG":
            arr = imagecodecs.png_decode(data)
            if arr.dtype == np.uint16:
                arr = (arr >> 8).astype(np.uint8)
        else:
            arr = _pil_decode_rgb(path)
    except (RuntimeError, *errors) as err:
        if isinstance(err, SlideReadError):
            raise
        msg = f"{corrupt} ({type(err).__name__}: {err})"
        raise SlideReadError(msg) from err
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[:2] != (h, w):
        msg = (
            f"{path} decodes to shape {arr.shape}; napari-seal expects an RGB H&E image"
        )
        raise SlideReadError(msg)
    if arr.shape[2] == 4:  # RGBA: drop alpha
        arr = arr[..., :3]
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _pil_decode_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with _no_pil_pixel_limit(), Image.open(path) as im:
        im.load()
        return np.asarray(im.convert("RGB"))


def build_pyramid(level0: np.ndarray, *, min_px: int = CHUNK_PX) -> list[np.ndarray]:
    """Halve ``level0`` (2 x 2 area mean) until the longest side is under ``min_px``."""
    levels = [level0]
    while max(levels[-1].shape[:2]) >= min_px:
        levels.append(block_mean(levels[-1], 2))
    return levels


def _write_cache(tmp: Path, levels: list[np.ndarray], attrs: dict) -> None:
    import zarr

    group = zarr.open_group(str(tmp), mode="w")
    for i, arr in enumerate(levels):
        chunks = (CHUNK_PX, CHUNK_PX, 3)
        if hasattr(group, "create_array"):
            z = group.create_array(
                str(i), shape=arr.shape, chunks=chunks, dtype="uint8"
            )
        else:  # pragma: no cover - zarr 2
            z = group.create_dataset(
                str(i), shape=arr.shape, chunks=chunks, dtype="uint8"
            )
        z[...] = arr
    group.attrs["napari_seal"] = attrs


def _read_cache(folder: Path, identity: dict) -> Any | None:
    """Return the zarr group when ``folder`` is a complete cache of ``identity``."""
    import zarr

    if not folder.is_dir():
        return None
    try:
        group = zarr.open_group(str(folder), mode="r")
        attrs = dict(group.attrs.get("napari_seal", {}))
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("ignoring unreadable slide cache %s: %s", folder, err)
        return None
    if (
        attrs.get("format") != CACHE_FORMAT
        or not attrs.get("complete")
        or attrs.get("identity") != identity
    ):
        return None
    return group


def _safe_stem(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:40] or "slide"


def open_flat_levels(
    path: Path, *, kind: str, identity: dict, cache_dir: Path | None
) -> tuple[list[CachedChunkSource], Path]:
    """Open (building if needed) the zarr pyramid cache of a flat image.

    Returns
    -------
    The level sources (level 0 first) and the cache folder.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache_dir / f"{_safe_stem(path)}-{cache_key(identity)}.zarr"
    group = _read_cache(folder, identity)
    if group is None:
        _build_cache(path, folder, kind=kind, identity=identity)
        group = _read_cache(folder, identity)
        if group is None:  # pragma: no cover - written just now
            msg = (
                f"the slide cache {folder} could not be read back; delete it and retry"
            )
            raise OutputPathError(msg)
    n = int(group.attrs["napari_seal"]["n_levels"])
    cache = TileCache()
    sources = [
        CachedChunkSource(
            group[str(i)], chunks=(CHUNK_PX, CHUNK_PX), cache=cache, key=i
        )
        for i in range(n)
    ]
    return sources, folder


def _build_cache(path: Path, folder: Path, *, kind: str, identity: dict) -> None:
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        msg = (
            f"cannot create the slide cache folder {folder.parent}: {err.strerror}; "
            "set NAPARI_SEAL_CACHE (or pass cache_dir) to a writable folder"
        )
        raise OutputPathError(msg) from err
    level0 = _decode_flat(path)
    logger.info("building the pyramid cache of %s in %s", path, folder)
    levels = build_pyramid(level0)
    attrs = {
        "format": CACHE_FORMAT,
        "identity": identity,
        "kind": kind,
        "shape": [int(level0.shape[0]), int(level0.shape[1])],
        "n_levels": len(levels),
        "complete": True,
    }
    remove_stale_temporaries(folder.parent)  # caches of killed processes
    tmp = folder.parent / f"{temporary_prefix(folder.name)}{uuid.uuid4().hex[:8]}"
    try:
        _write_cache(tmp, levels, attrs)
        if folder.exists():  # stale (other identity/format): replace it
            shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:
            if _read_cache(folder, identity) is None:  # not a concurrent twin: fail
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        msg = (
            f"cannot write the slide cache {folder}: {err.strerror or err}; free disk "
            "space or set NAPARI_SEAL_CACHE (or pass cache_dir) to another folder"
        )
        raise OutputPathError(msg) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
