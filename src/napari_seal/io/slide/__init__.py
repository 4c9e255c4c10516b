"""Whole-slide images: open any supported file as a lazy multiscale pyramid.

Owns the slide backends (tifffile, flat JPEG/PNG through a zarr cache, OpenSlide) and
the streaming pyramidal TIFF writer. May import: :mod:`napari_seal.errors`,
:mod:`napari_seal.progress`, :mod:`napari_seal.io.atomic`.
"""

from __future__ import annotations

from napari_seal.io.slide.core import (
    MPP_SOURCES,
    Slide,
    open_slide,
)
from napari_seal.io.slide.writer import (
    write_pyramidal_tiff,
)

__all__ = [
    "MPP_SOURCES",
    "Slide",
    "open_slide",
    "write_pyramidal_tiff",
]
