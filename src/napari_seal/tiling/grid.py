"""Tissue mask, the patch grid with stable integer tile ids, and spot-centred crops.

Tissue detection
    :func:`tissue_mask` reads a low-resolution copy of the slide (longest side
    ``mask_max_px``) and computes the HSV saturation ``(max - min) / max`` of each
    pixel: glass is grey/white (saturation near 0), stained tissue is pink/purple.
    The saturation is smoothed with a Gaussian over about 15 um (``SMOOTHING_UM``;
    1/512 of the mask when the pixel size is unknown) so that pale cytoplasm,
    stroma and nuclei form one tissue class, then thresholded: Otsu's threshold on
    the smoothed histogram, never below ``MIN_OTSU_SATURATION`` so a blank slide is
    not all "tissue"; ``TilingConfig.tissue_threshold`` (``--tissue-threshold``) sets
    it explicitly. Nearly black pixels (value < 0.1: scanner borders, pen) are not
    tissue. The mask is cleaned with a 3 x 3 opening and then connected components
    smaller than 1/10,000 of the image (dust, debris) are removed.

Tile grid
    Tiles are ``tile_px`` pixels at ``mpp`` um/px (224 px at 0.5 um/px by default),
    i.e. ``tile_size_l0 = tile_px * mpp / slide_mpp`` level-0 pixels, placed every
    ``stride_l0 = stride_px * mpp / slide_mpp`` level-0 pixels from the top-left
    corner. The full grid has ``n_rows x n_cols`` tiles (just enough to cover the
    slide) and tile ``(row, col)`` has the id ``row * n_cols + col``: ids depend only on
    the slide size and the geometry, not on the mask, so embeddings, predictions and
    query scores join on ids. Tissue tiles are those whose mask fraction is at least
    ``min_tissue_fraction``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_seal.errors import BadInputError, EncoderMismatchError, NoTissueError
from napari_seal.tiling.config import TilingConfig
from napari_seal.tiling.tissue import TissueMask, tissue_mask

if TYPE_CHECKING:
    from napari_seal.io.sample import SpatialSample
    from napari_seal.io.slide.core import Slide

__all__ = [
    "TileGrid",
    "TilingConfig",
    "make_tile_grid",
    "read_tiles",
    "spot_patches",
]


@dataclass
class TileGrid:
    """The tissue tiles of a slide on a regular grid with stable integer ids.

    Attributes
    ----------
    tile_px, mpp, stride_px
        Tile side and stride in pixels at ``mpp`` um/px.
    slide_mpp
        The slide's um per level-0 pixel.
    n_rows, n_cols
        Size of the full grid (tissue or not).
    tile_ids
        ``(n,)`` int64 ids ``row * n_cols + col`` of the tissue tiles, sorted.
    coords
        ``(n, 2)`` int64 level-0 ``(x, y)`` of each tile's top-left corner (rounded).
    width_px, height_px
        Level-0 size of the slide.
    tissue_fraction
        ``(n,)`` float32 mask fraction of each tile (``None`` when unknown).
    """

    tile_px: int
    mpp: float
    stride_px: int
    slide_mpp: float
    n_rows: int
    n_cols: int
    tile_ids: np.ndarray
    coords: np.ndarray
    width_px: int = 0
    height_px: int = 0
    tissue_fraction: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.tile_ids.shape[0])

    @property
    def n_tiles(self) -> int:
        """Number of tissue tiles."""
        return len(self)

    @property
    def tile_size_l0(self) -> float:
        """Tile side in level-0 pixels."""
        return self.tile_px * self.mpp / self.slide_mpp

    @property
    def stride_l0(self) -> float:
        """Stride in level-0 pixels."""
        return self.stride_px * self.mpp / self.slide_mpp

    def rows_cols(self) -> np.ndarray:
        """``(n, 2)`` int64 ``(row, col)`` of each tile."""
        ids = np.asarray(self.tile_ids, dtype=np.int64)
        return np.stack([ids // self.n_cols, ids % self.n_cols], axis=1)

    def origins_xy(self) -> np.ndarray:
        """``(n, 2)`` float64 exact level-0 ``(x, y)`` of each tile's top-left."""
        rc = self.rows_cols().astype(np.float64)
        return rc[:, ::-1] * self.stride_l0

    @property
    def centres_xy(self) -> np.ndarray:
        """``(n, 2)`` float64 level-0 ``(x, y)`` tile centres (for ``read_patch``)."""
        return self.origins_xy() + self.tile_size_l0 / 2

    @property
    def scale_um(self) -> tuple[float, float]:
        """napari ``scale`` of a one-pixel-per-tile image (``(row, col)`` um)."""
        s = self.stride_px * self.mpp
        return (s, s)

    @property
    def translate_um(self) -> tuple[float, float]:
        """napari ``translate`` putting pixel ``(row, col)`` on that tile's centre.

        napari draws slide pixel ``k`` centred at ``k * slide_mpp``; the tile
        starting at level-0 edge coordinate ``x`` is centred at
        ``x + tile_size_l0 / 2``, i.e. at world ``(x + tile_size_l0 / 2 - 0.5) * mpp``.
        """
        t = (self.tile_size_l0 / 2 - 0.5) * self.slide_mpp
        return (t, t)

    def index_of(self, tile_ids: np.ndarray) -> np.ndarray:
        """Positions of ``tile_ids`` in this grid (``-1`` for ids not in it)."""
        tile_ids = np.asarray(tile_ids, dtype=np.int64)
        pos = np.searchsorted(self.tile_ids, tile_ids)
        pos = np.clip(pos, 0, max(len(self) - 1, 0))
        ok = (
            (len(self) > 0) & (self.tile_ids[pos] == tile_ids)
            if len(self)
            else np.zeros(tile_ids.shape, bool)
        )
        return np.where(ok, pos, -1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (coords are recomputed from ids on load)."""
        d = {
            "tile_px": int(self.tile_px),
            "mpp": float(self.mpp),
            "stride_px": int(self.stride_px),
            "slide_mpp": float(self.slide_mpp),
            "n_rows": int(self.n_rows),
            "n_cols": int(self.n_cols),
            "width_px": int(self.width_px),
            "height_px": int(self.height_px),
            "tile_ids": [int(i) for i in self.tile_ids],
        }
        if self.tissue_fraction is not None:
            d["tissue_fraction"] = [round(float(f), 4) for f in self.tissue_fraction]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TileGrid:
        """Inverse of :meth:`to_dict`."""
        try:
            ids = np.asarray(d["tile_ids"], dtype=np.int64)
            frac = d.get("tissue_fraction")
            grid = cls(
                tile_px=int(d["tile_px"]),
                mpp=float(d["mpp"]),
                stride_px=int(d["stride_px"]),
                slide_mpp=float(d["slide_mpp"]),
                n_rows=int(d["n_rows"]),
                n_cols=int(d["n_cols"]),
                tile_ids=ids,
                coords=np.zeros((ids.shape[0], 2), np.int64),
                width_px=int(d.get("width_px", 0)),
                height_px=int(d.get("height_px", 0)),
                tissue_fraction=None if frac is None else np.asarray(frac, np.float32),
            )
        except (KeyError, TypeError, ValueError) as err:
            msg = f"not a tile grid description ({err}); was it written by napari-seal?"
            raise BadInputError(msg) from err
        grid.coords = np.round(grid.origins_xy()).astype(np.int64)
        return grid


def _grid_size(extent_px: int, tile_l0: float, stride_l0: float) -> int:
    """Number of tiles so that the last one reaches the slide edge."""
    return int(math.ceil(max(extent_px - tile_l0, 0) / stride_l0 - 1e-9)) + 1


def _check_fits(slide: Slide, size_l0: float, what: str) -> None:
    if size_l0 > slide.width_px or size_l0 > slide.height_px:
        msg = (
            f"the {what} ({size_l0:.0f} level-0 px) is larger than the slide "
            f"({slide.width_px} x {slide.height_px} px at {slide.mpp:.3g} um/px); use "
            "an encoder with a smaller patch (tile_px * mpp) or check the slide's "
            "pixel size (--mpp)"
        )
        raise EncoderMismatchError(msg)


def make_tile_grid(
    slide: Slide, *, config: TilingConfig | None = None, mask: TissueMask | None = None
) -> TileGrid:
    """Build the grid of tissue tiles of ``slide`` (see module docstring).

    Raises
    ------
    MppUnknownError
        The slide has no pixel size.
    EncoderMismatchError
        A tile is larger than the slide.
    NoTissueError
        No tile has enough tissue.
    """
    config = config or TilingConfig()
    slide_mpp = slide.require_mpp()
    tile_l0 = config.tile_px * config.mpp / slide_mpp
    stride_l0 = config.stride * config.mpp / slide_mpp
    _check_fits(
        slide, tile_l0, f"encoder tile ({config.tile_px} px at {config.mpp} um/px)"
    )
    n_rows = _grid_size(slide.height_px, tile_l0, stride_l0)
    n_cols = _grid_size(slide.width_px, tile_l0, stride_l0)
    if mask is None:
        mask = tissue_mask(slide, config=config)
    # tissue fraction of every grid tile from an integral image of the mask
    m = mask.mask.astype(np.float64)
    integral = np.zeros((m.shape[0] + 1, m.shape[1] + 1))
    integral[1:, 1:] = m.cumsum(0).cumsum(1)
    md = mask.downsample

    def edges(n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        start = np.arange(n) * stride_l0 / md
        lo = np.floor(start + 0.5).astype(np.int64)
        hi = np.maximum(np.floor(start + tile_l0 / md + 0.5).astype(np.int64), lo + 1)
        # clip to the mask; the part of a tile outside the slide counts as background
        return np.clip(lo, 0, size), np.clip(hi, 0, size), hi - lo

    r0, r1, rn = edges(n_rows, m.shape[0])
    c0, c1, cn = edges(n_cols, m.shape[1])
    covered = (
        integral[r1][:, c1]
        - integral[r0][:, c1]
        - integral[r1][:, c0]
        + integral[r0][:, c0]
    )
    frac = covered / np.outer(rn, cn)
    keep = frac >= config.min_tissue_fraction
    ids = np.flatnonzero(keep).astype(np.int64)
    if ids.size == 0:
        thr = f"{mask.threshold:.3f}"
        msg = (
            f"no tissue found on {slide.name} (saturation threshold {thr}, "
            f"{mask.fraction:.1%} of the slide above it, min tissue fraction per tile "
            f"{config.min_tissue_fraction}); if the tissue is faint, lower the "
            "threshold with --tissue-threshold (e.g. 0.02) or "
            "TilingConfig(tissue_threshold=...), or lower min_tissue_fraction"
        )
        raise NoTissueError(msg)
    grid = TileGrid(
        tile_px=config.tile_px,
        mpp=float(config.mpp),
        stride_px=config.stride,
        slide_mpp=slide_mpp,
        n_rows=n_rows,
        n_cols=n_cols,
        tile_ids=ids,
        coords=np.zeros((ids.size, 2), np.int64),
        width_px=slide.width_px,
        height_px=slide.height_px,
        tissue_fraction=frac.ravel()[ids].astype(np.float32),
    )
    grid.coords = np.round(grid.origins_xy()).astype(np.int64)
    return grid


def read_tiles(slide: Slide, grid: TileGrid, index: np.ndarray) -> np.ndarray:
    """Read tiles of ``grid`` at the grid's resolution.

    Parameters
    ----------
    slide
        The slide the grid was made for (its mpp is used as ``grid.slide_mpp``).
    grid
        The tile grid.
    index
        Positions into ``grid.tile_ids`` (not tile ids; see :meth:`TileGrid.index_of`).

    Returns
    -------
    ``(len(index), tile_px, tile_px, 3)`` uint8.
    """
    index = np.asarray(index, dtype=np.int64).reshape(-1)
    if index.size and (index.min() < 0 or index.max() >= len(grid)):
        msg = (
            f"tile positions must be in 0..{len(grid) - 1}, got "
            f"{index.min()}..{index.max()}"
        )
        raise BadInputError(msg)
    if slide.mpp is None or abs(slide.mpp - grid.slide_mpp) > 1e-9 * grid.slide_mpp:
        slide = slide.with_mpp(
            grid.slide_mpp, source=slide.mpp_source if slide.mpp else "user"
        )
    out = np.empty((index.size, grid.tile_px, grid.tile_px, 3), np.uint8)
    centres = grid.centres_xy
    for k, i in enumerate(index):
        cx, cy = centres[i]
        out[k] = slide.read_patch(cx, cy, size_px=grid.tile_px, mpp_out=grid.mpp)
    return out


def spot_patches(
    sample: SpatialSample, *, size_px: int = 224, mpp: float = 0.5
) -> np.ndarray:
    """Spot-centred patches of ``size_px`` pixels at ``mpp`` um/px.

    Centres are ``sample.adata.obsm["spatial"]`` (level-0 ``(x, y)``), read at
    ``sample.mpp`` (the sample's pixel size wins over the slide's).

    Returns
    -------
    ``(n_spots, size_px, size_px, 3)`` uint8, in ``obs`` order.
    """
    slide = sample.slide
    if slide.mpp is None or abs(slide.mpp - sample.mpp) > 1e-9 * sample.mpp:
        source = (
            sample.mpp_source
            if sample.mpp_source in ("metadata", "user", "estimated")
            else "user"
        )
        slide = slide.with_mpp(sample.mpp, source=source)
    _check_fits(
        slide, size_px * mpp / sample.mpp, f"spot patch ({size_px} px at {mpp} um/px)"
    )
    xy = sample.spots_xy
    if not np.isfinite(xy).all():
        msg = "spot coordinates contain NaN or infinite values; fix obsm['spatial']"
        raise BadInputError(msg)
    out = np.empty((xy.shape[0], size_px, size_px, 3), np.uint8)
    for k, (cx, cy) in enumerate(xy):
        out[k] = slide.read_patch(cx, cy, size_px=size_px, mpp_out=mpp)
    return out
