"""Highlighting of query scores: the score map, top-q contours, top-k tiles, crops.

Pure numpy (no torch). Geometry follows the predicted-expression overlays: one pixel
per tile on the tile grid, pixel ``(row, col)`` centred on the tile's centre, napari
world units in micrometres (``scale_um``, ``translate_um`` in ``(row, col)`` order).
Public names are re-exported by :mod:`napari_seal.retrieval.gene_query`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from napari_seal.errors import BadInputError

__all__ = [
    "Contours",
    "GridGeometry",
    "ScoreImage",
    "TopTiles",
    "gallery_crops",
    "grid_geometry",
    "score_image",
    "top_fraction_contour",
    "top_k_tiles",
]


@dataclass(frozen=True)
class GridGeometry:
    """Where the tile grid lies on the slide.

    Attributes
    ----------
    n_rows, n_cols
        Grid shape (tile id = ``row * n_cols + col``).
    tile_l0, stride_l0
        Tile side and step in level-0 pixels.
    slide_mpp
        Micrometres per level-0 pixel.
    origin_l0
        Level-0 ``(x, y)`` of the top-left corner of tile ``(0, 0)``.
    """

    n_rows: int
    n_cols: int
    tile_l0: float
    stride_l0: float
    slide_mpp: float
    origin_l0: tuple[float, float] = (0.0, 0.0)

    @property
    def scale_um(self) -> tuple[float, float]:
        """Size of one score pixel in micrometres, ``(row, col)``."""
        s = float(self.stride_l0 * self.slide_mpp)
        return (s, s)

    @property
    def translate_um(self) -> tuple[float, float]:
        """World position (um, ``(row, col)``) of the centre of pixel ``(0, 0)``."""
        half = self.tile_l0 / 2.0
        return (
            float((self.origin_l0[1] + half) * self.slide_mpp),
            float((self.origin_l0[0] + half) * self.slide_mpp),
        )


def grid_geometry(grid: Any) -> GridGeometry:
    """Read the geometry of a :class:`~napari_seal.tiling.grid.TileGrid` or its dict.

    Parameters
    ----------
    grid
        A ``TileGrid``, ``TileGrid.to_dict()`` or a store's ``attrs["grid"]``.
    """
    if isinstance(grid, GridGeometry):
        return grid
    d = dict(grid) if isinstance(grid, Mapping) else None
    if d is None and hasattr(grid, "to_dict"):
        d = dict(grid.to_dict())
    if d is None:
        msg = f"cannot read a tile grid from {type(grid).__name__}"
        raise BadInputError(msg)
    try:
        tile_px = float(d["tile_px"])
        mpp = float(d["mpp"])
        slide_mpp = float(d["slide_mpp"])
        stride_px = float(d.get("stride_px") or tile_px)
        n_rows, n_cols = int(d["n_rows"]), int(d["n_cols"])
    except (KeyError, TypeError, ValueError) as err:
        msg = (
            f"the tile grid lacks {err}; the embedding store is from another "
            "version: embed the slide again with `napari-seal embed`"
        )
        raise BadInputError(msg) from None
    factor = mpp / slide_mpp
    origin = d.get("origin_l0") or d.get("origin_xy") or (0.0, 0.0)
    return GridGeometry(
        n_rows=n_rows,
        n_cols=n_cols,
        tile_l0=float(d.get("tile_size_l0") or tile_px * factor),
        stride_l0=float(d.get("stride_l0") or stride_px * factor),
        slide_mpp=slide_mpp,
        origin_l0=(float(origin[0]), float(origin[1])),
    )


class ScoreImage(NamedTuple):
    """A score map on the tile grid (unpacks as ``image, scale_um, translate_um``)."""

    image: np.ndarray
    scale_um: tuple[float, float]
    translate_um: tuple[float, float]


def score_image(grid: Any, tile_ids: np.ndarray, scores: np.ndarray) -> ScoreImage:
    """Paint per-tile scores on the tile grid.

    Parameters
    ----------
    grid
        The grid (anything :func:`grid_geometry` reads).
    tile_ids
        ``(n,)`` tile ids (``row * n_cols + col``).
    scores
        ``(n,)`` scores, same order.

    Returns
    -------
    ScoreImage
        ``(n_rows, n_cols)`` float32 with NaN off tissue, and its napari
        ``scale_um`` / ``translate_um``.
    """
    geo = grid_geometry(grid)
    ids = np.asarray(tile_ids, dtype=np.int64)
    values = np.asarray(scores, dtype=np.float32)
    if ids.shape != values.shape:
        msg = f"{values.shape[0]} scores for {ids.shape[0]} tiles; they must pair up"
        raise BadInputError(msg)
    if ids.size and (ids.min() < 0 or ids.max() >= geo.n_rows * geo.n_cols):
        msg = "tile ids fall outside the grid; the scores belong to another store"
        raise BadInputError(msg)
    img = np.full(geo.n_rows * geo.n_cols, np.nan, dtype=np.float32)
    img[ids] = values
    return ScoreImage(
        img.reshape(geo.n_rows, geo.n_cols), geo.scale_um, geo.translate_um
    )


@dataclass
class Contours:
    """Closed polygons around the selected (top-scoring) pixels of a score map.

    Every ring is closed implicitly (last vertex connects to the first). Points inside
    an odd number of rings are selected (even-odd rule), so holes need no special
    handling; ``holes[i]`` says whether ring ``i`` runs the other way (a hole).

    Attributes
    ----------
    rings_um
        ``(m, 2)`` napari world coordinates ``(row, col)`` in micrometres.
    rings_px
        ``(m, 2)`` level-0 ``(x, y)`` pixels (``None`` when no ``mpp`` was given).
    holes
        One flag per ring.
    mask
        The selected pixels of the score map.
    threshold
        Lowest selected score.
    """

    rings_um: list[np.ndarray]
    rings_px: list[np.ndarray] | None
    holes: list[bool]
    mask: np.ndarray
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_selected(self) -> int:
        """Number of selected tiles."""
        return int(self.mask.sum())


_RIGHT_TURN = {(0, 1): (1, 0), (1, 0): (0, -1), (0, -1): (-1, 0), (-1, 0): (0, 1)}


def _trace(mask: np.ndarray) -> list[np.ndarray]:
    """Trace the pixel-edge boundary of ``mask`` into closed vertex rings.

    Vertex ``(i, j)`` is the corner between rows ``i-1, i`` and columns ``j-1, j``.
    Edges run with the selected pixels on their right; at a vertex where two selected
    pixels touch only diagonally the trace turns right, so they stay separate rings.
    """
    m = np.pad(mask.astype(bool), 1)
    core = m[1:-1, 1:-1]
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def add(starts: np.ndarray, d: tuple[int, int]) -> None:
        for i, j in starts:
            edges.setdefault((int(i), int(j)), []).append(d)

    r, c = np.nonzero(core & ~m[:-2, 1:-1])  # top edge, left -> right
    add(np.stack([r, c], 1), (0, 1))
    r, c = np.nonzero(core & ~m[1:-1, 2:])  # right edge, top -> bottom
    add(np.stack([r, c + 1], 1), (1, 0))
    r, c = np.nonzero(core & ~m[2:, 1:-1])  # bottom edge, right -> left
    add(np.stack([r + 1, c + 1], 1), (0, -1))
    r, c = np.nonzero(core & ~m[1:-1, :-2])  # left edge, bottom -> top
    add(np.stack([r + 1, c], 1), (-1, 0))
    rings = []
    while edges:
        start = next(iter(edges))
        d = edges[start][0]
        pos = start
        verts = [start]
        while True:
            outs = edges[pos]
            right = _RIGHT_TURN[d]
            choice = right if right in outs else (d if d in outs else outs[0])
            outs.remove(choice)
            if not outs:
                del edges[pos]
            pos = (pos[0] + choice[0], pos[1] + choice[1])
            d = choice
            if pos == start:
                break
            verts.append(pos)
        rings.append(_drop_collinear(np.asarray(verts, dtype=np.float64)))
    return rings


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    prev = np.roll(ring, 1, axis=0)
    nxt = np.roll(ring, -1, axis=0)
    a, b = ring - prev, nxt - ring
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return ring[cross != 0]


def _signed_area(ring: np.ndarray) -> float:
    y, x = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def top_fraction_contour(
    score_img: np.ndarray | ScoreImage,
    q: float = 0.1,
    *,
    threshold: float | None = None,
    scale_um: tuple[float, float] | None = None,
    translate_um: tuple[float, float] | None = None,
    mpp: float | None = None,
) -> Contours:
    """Contour the top ``q`` fraction of the tissue tiles of a score map.

    Parameters
    ----------
    score_img
        A :class:`ScoreImage` or a 2-D array with NaN off tissue.
    q
        Fraction of tissue tiles to select, in ``(0, 1]`` (0.1 = the top 10 %): the
        ``ceil(q * n_tissue)`` highest scores (ties at the cut broken by grid order).
    threshold
        Select every tile scoring ``>= threshold`` instead of a fraction.
    scale_um, translate_um
        Geometry of the map (taken from a :class:`ScoreImage`; default 1 and 0).
    mpp
        Slide micrometres per level-0 pixel; when given, ``rings_px`` are filled.

    Returns
    -------
    Contours
        Rings along the selected pixels' outer edges, so they enclose exactly the
        selected tiles' cells.
    """
    if isinstance(score_img, ScoreImage):
        scale_um = scale_um or score_img.scale_um
        translate_um = translate_um or score_img.translate_um
        score_img = score_img.image
    img = np.asarray(score_img, dtype=np.float64)
    if img.ndim != 2:
        msg = f"the score map must be 2-D, got shape {img.shape}"
        raise BadInputError(msg)
    scale = tuple(float(s) for s in (scale_um or (1.0, 1.0)))
    trans = tuple(float(t) for t in (translate_um or (0.0, 0.0)))
    tissue = np.isfinite(img)
    n_tissue = int(tissue.sum())
    if threshold is not None:
        if not math.isfinite(float(threshold)):
            msg = f"the contour threshold must be a finite number, got {threshold!r}"
            raise BadInputError(msg)
        mask = tissue & (np.nan_to_num(img, nan=-np.inf) >= float(threshold))
        cut = float(threshold)
    else:
        if not (0 < float(q) <= 1):
            msg = f"top fraction q={q!r} must be in (0, 1], e.g. 0.1 for the top 10 %"
            raise BadInputError(msg)
        k = min(n_tissue, math.ceil(float(q) * n_tissue))
        mask = np.zeros(img.shape, dtype=bool)
        flat = np.flatnonzero(tissue.ravel())
        if k > 0:
            order = np.argsort(-img.ravel()[flat], kind="stable")[:k]
            mask.ravel()[flat[order]] = True
        cut = float(img.ravel()[flat[order[-1]]]) if k > 0 else float("nan")
    rings_idx = _trace(mask)
    rings_um, rings_px, holes = [], [] if mpp else None, []
    for ring in rings_idx:
        rc = ring - 0.5  # vertex (i, j) is the corner at pixel coords (i - .5, j - .5)
        um = np.column_stack(
            [trans[0] + rc[:, 0] * scale[0], trans[1] + rc[:, 1] * scale[1]]
        )
        rings_um.append(um)
        if mpp:
            rings_px.append(um[:, ::-1] / float(mpp))
        holes.append(_signed_area(ring) < 0)
    return Contours(
        rings_um,
        rings_px,
        holes,
        mask,
        cut,
        info={"q": None if threshold is not None else float(q), "n_tissue": n_tissue},
    )


@dataclass
class TopTiles:
    """The ``k`` best tiles, best first."""

    tile_ids: np.ndarray
    coords: np.ndarray
    scores: np.ndarray
    index: np.ndarray  # positions in the store's tile order

    def __len__(self) -> int:
        return int(self.tile_ids.size)


def top_k_tiles(
    scores: Any,
    k: int = 16,
    *,
    tile_ids: np.ndarray | None = None,
    coords: np.ndarray | None = None,
) -> TopTiles:
    """Return the ``k`` highest-scoring tiles (NaN scores skipped, ties by tile order).

    Parameters
    ----------
    scores
        ``(n,)`` scores, or a result object with ``scores``, ``tile_ids`` and ``coords``
        (e.g. :class:`napari_seal.retrieval.gene_query.QueryResult`).
    k
        Number of tiles.
    tile_ids, coords
        ``(n,)`` ids and ``(n, 2)`` level-0 top-left ``(x, y)`` when ``scores`` is an
        array.
    """
    if hasattr(scores, "scores"):
        tile_ids = scores.tile_ids if tile_ids is None else tile_ids
        coords = scores.coords if coords is None else coords
        scores = scores.scores
    values = np.asarray(scores, dtype=np.float64).ravel()
    n = values.size
    ids = np.arange(n, dtype=np.int64) if tile_ids is None else np.asarray(tile_ids)
    xy = np.zeros((n, 2), dtype=np.int64) if coords is None else np.asarray(coords)
    if k < 1:
        msg = f"k={k} must be at least 1"
        raise BadInputError(msg)
    finite = np.flatnonzero(np.isfinite(values))
    order = finite[np.argsort(-values[finite], kind="stable")[:k]]
    return TopTiles(ids[order], xy[order], values[order].astype(np.float32), order)


def gallery_crops(slide: Any, grid: Any, tile_ids: np.ndarray) -> np.ndarray:
    """Read the image of each tile (for a gallery of the top-k tiles).

    Parameters
    ----------
    slide
        The :class:`~napari_seal.io.slide.core.Slide` the grid was made on.
    grid
        Its ``TileGrid`` (or grid dict: then tiles are read as patches at the
        grid's ``tile_px`` and ``mpp``).
    tile_ids
        Tile ids to read.

    Returns
    -------
    ``(k, tile_px, tile_px, 3)`` uint8.
    """
    ids = np.asarray(tile_ids, dtype=np.int64)
    known = getattr(grid, "tile_ids", None)
    if known is not None and hasattr(grid, "n_cols"):
        pos = np.searchsorted(known, ids)
        ok = (pos < known.size) & (known[np.minimum(pos, known.size - 1)] == ids)
        if not np.all(ok):
            msg = f"tile ids {ids[~ok][:5].tolist()} are not tissue tiles of this grid"
            raise BadInputError(msg)
        from napari_seal.tiling.grid import read_tiles

        return np.asarray(read_tiles(slide, grid, pos))
    geo = grid_geometry(grid)
    d = dict(grid) if isinstance(grid, Mapping) else dict(grid.to_dict())
    tile_px, mpp = int(d["tile_px"]), float(d["mpp"])
    out = np.empty((ids.size, tile_px, tile_px, 3), dtype=np.uint8)
    for i, tid in enumerate(ids):
        row, col = divmod(int(tid), geo.n_cols)
        cx = geo.origin_l0[0] + col * geo.stride_l0 + geo.tile_l0 / 2
        cy = geo.origin_l0[1] + row * geo.stride_l0 + geo.tile_l0 / 2
        out[i] = slide.read_patch(cx, cy, size_px=tile_px, mpp_out=mpp)
    return out
