"""Tissue mask, the tile grid with stable integer tile ids, spot-centred crops, QC.

May import: :mod:`napari_seal.io`, :mod:`napari_seal.errors`,
:mod:`napari_seal.progress`.
"""

from __future__ import annotations

from napari_seal.tiling.grid import (
    TileGrid,
    TilingConfig,
    make_tile_grid,
    read_tiles,
    spot_patches,
)
from napari_seal.tiling.tissue import (
    MIN_OTSU_SATURATION,
    TissueMask,
    otsu_threshold,
    tissue_mask,
)

__all__ = [
    "MIN_OTSU_SATURATION",
    "TileGrid",
    "TilingConfig",
    "TissueMask",
    "make_tile_grid",
    "otsu_threshold",
    "read_tiles",
    "spot_patches",
    "tissue_mask",
]
