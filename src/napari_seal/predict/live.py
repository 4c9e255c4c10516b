"""A predicted-expression overlay painted from tiles as they are embedded.

:class:`LiveOverlay` keeps a one-pixel-per-tile image (the geometry of
:func:`napari_seal.predict.expression.overlay_geometry`) and paints each
:class:`~napari_seal.embedding.on_demand.TilesReady` batch into it: exact tiles as
their pixel, preview samples as their ``k x k`` block (until the exact tiles
replace them). The head's hidden layer of every painted tile is kept, so switching
genes repaints without reading the store. :func:`iter_live_overlay` runs an
:class:`~napari_seal.embedding.on_demand.OnDemandEmbedder` and paints in the same
(worker) thread, yielding :class:`OverlayUpdate` snapshots for a viewer.
"""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LiveOverlay", "OverlayUpdate", "iter_live_overlay"]


@dataclass
class OverlayUpdate:
    """A snapshot of the overlay for the viewer (made in the worker thread).

    ``covered``: every visible tile shows a value (exact or its preview block).
    """

    image: np.ndarray
    contrast_limits: tuple[float, float]
    preview: bool
    view_done: int
    view_total: int
    tiles_computed: int
    covered: bool = False
    stage: str = "view"
    unit: str = "tiles"
    message: str = ""

    @property
    def done(self) -> int:
        """Visible tiles known."""
        return self.view_done

    @property
    def total(self) -> int:
        """Visible tiles."""
        return self.view_total

    @property
    def view_complete(self) -> bool:
        """Every visible tile is painted exactly."""
        return self.view_done >= self.view_total


class LiveOverlay:
    """One gene's predicted expression on the tile grid, painted batch by batch.

    Parameters
    ----------
    grid
        The :class:`~napari_seal.tiling.grid.TileGrid` of the store.
    head
        An :class:`~napari_seal.predict.heads.ExpressionHead`.
    gene
        The gene to paint.
    """

    def __init__(self, grid: Any, head: Any, gene: str) -> None:
        self.grid = grid
        self.head = head
        self.shape = (int(grid.n_rows), int(grid.n_cols))
        rc = grid.rows_cols()
        self.rows, self.cols = rc[:, 0], rc[:, 1]
        n = len(grid.tile_ids)
        self.exact = np.zeros(n, dtype=bool)
        self.image = np.full(self.shape, np.nan, dtype=np.float32)
        self._tissue = np.zeros(self.shape, dtype=bool)
        self._tissue[self.rows, self.cols] = True
        self._exact_img = np.zeros(self.shape, dtype=bool)
        self._hidden: np.ndarray | None = None
        self._previews: list[tuple[np.ndarray, np.ndarray]] = []
        self._requested: str | None = None
        self._request_lock = threading.Lock()
        self.set_gene(gene)

    @property
    def scale_um(self) -> tuple[float, float]:
        """napari ``scale`` (row, col) in micrometres."""
        return tuple(float(v) for v in self.grid.scale_um)

    @property
    def translate_um(self) -> tuple[float, float]:
        """napari ``translate`` (row, col) in micrometres."""
        return tuple(float(v) for v in self.grid.translate_um)

    def set_gene(self, gene: str) -> None:
        """Paint ``gene`` (unknown genes raise the head's ``GeneQueryError``)."""
        self._gene_index = self.head.index([gene])
        self.gene = self.head.genes[self._gene_index[0]]
        self.image[:] = np.nan
        self._exact_img[:] = False
        if self._hidden is None:
            return
        for index, k in self._previews:
            self._paint(index, self._values(self._hidden[index]), k)
        done = np.flatnonzero(self.exact)
        self._paint(done, self._values(self._hidden[done]), np.ones(done.size, int))

    def request_gene(self, gene: str) -> None:
        """Ask the thread that paints (the one calling :meth:`update`) to switch to
        ``gene`` at its next step (thread-safe; see :func:`iter_live_overlay`)."""
        self.head.index([gene])  # an unknown gene raises here, in the caller
        with self._request_lock:
            self._requested = gene

    def apply_request(self) -> bool:
        """Switch to the requested gene, if any (the painting thread): repainted from
        the decoder's hidden layer of every tile already known, no encoder work."""
        with self._request_lock:
            gene, self._requested = self._requested, None
        if gene is None:
            return False
        self.set_gene(gene)
        return True

    def _values(self, hidden: np.ndarray) -> np.ndarray:
        return np.asarray(self.head.output(hidden, self._gene_index)[:, 0], np.float32)

    def _paint(
        self, index: np.ndarray, values: np.ndarray, block_k: np.ndarray
    ) -> None:
        rows, cols = self.rows[index], self.cols[index]
        exact = block_k <= 1
        self.image[rows[exact], cols[exact]] = values[exact]
        self._exact_img[rows[exact], cols[exact]] = True
        for r, c, v, k in zip(
            rows[~exact], cols[~exact], values[~exact], block_k[~exact], strict=True
        ):
            r0, c0 = (r // k) * k, (c // k) * k
            sl = (slice(r0, r0 + k), slice(c0, c0 + k))
            fill = self._tissue[sl] & ~self._exact_img[sl]
            self.image[sl][fill] = v
        # a preview sample is itself an exact tile
        self.image[rows[~exact], cols[~exact]] = values[~exact]
        self._exact_img[rows[~exact], cols[~exact]] = True

    def update(self, event: Any) -> None:
        """Paint one :class:`~napari_seal.embedding.on_demand.TilesReady` batch."""
        index = np.asarray(event.index, dtype=np.int64)
        if index.size == 0:
            return
        emb = np.asarray(event.embeddings, dtype=np.float32)
        hidden = np.asarray(self.head.hidden(emb), dtype=np.float32)
        if self._hidden is None:
            self._hidden = np.zeros((len(self.exact), hidden.shape[1]), np.float32)
        self._hidden[index] = hidden
        ks = np.asarray(event.block_k, dtype=np.int64)
        if (ks > 1).any():
            self._previews.append((index[ks > 1], ks[ks > 1]))
        self._paint(index, self._values(hidden), ks)
        self.exact[index] = True  # a preview sample is itself an exact tile

    def preview_in(self, index: np.ndarray) -> bool:
        """Whether any of the tiles ``index`` shows a block value, not its own."""
        index = np.asarray(index, dtype=np.int64)
        return bool((~self._exact_img[self.rows[index], self.cols[index]]).any())

    def covers(self, index: np.ndarray) -> bool:
        """Whether every tile ``index`` shows a value (its own or its block's)."""
        index = np.asarray(index, dtype=np.int64)
        return bool(np.isfinite(self.image[self.rows[index], self.cols[index]]).all())

    def contrast_limits(self) -> tuple[float, float]:
        """1st-99th percentile of the painted exact values (``(0, 1)`` before any)."""
        vals = self.image[self._exact_img]
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            return (0.0, 1.0)
        lo, hi = (float(v) for v in np.percentile(vals, [1, 99]))
        return (lo, hi if hi > lo else lo + 1e-6)


def iter_live_overlay(
    engine: Any, overlay: LiveOverlay, *, until_view_complete: bool = False
) -> Generator[OverlayUpdate | None, None, int]:
    """Run ``engine`` and paint into ``overlay``; yield a snapshot per batch.

    Parameters
    ----------
    engine
        An :class:`~napari_seal.embedding.on_demand.OnDemandEmbedder`.
    overlay
        The overlay to paint.
    until_view_complete
        Return once every visible tile is painted exactly.

    Yields
    ------
    OverlayUpdate or None
        ``None`` while idle (a point where a thread worker can be stopped).

    Returns
    -------
    int
        Tiles computed by the encoder.
    """
    steps = engine.iter_run(until_view_complete=until_view_complete)

    def snapshot(event: Any) -> OverlayUpdate:
        visible = engine.visible_tiles()
        done = int(overlay.exact[visible].sum()) if visible.size else 0
        return OverlayUpdate(
            image=overlay.image.copy(),
            contrast_limits=overlay.contrast_limits(),
            preview=visible.size > 0 and overlay.preview_in(visible),
            view_done=event.view_done if event is not None else done,
            view_total=event.view_total if event is not None else int(visible.size),
            tiles_computed=(event.tiles_computed if event is not None
                            else engine.tiles_computed),
            covered=overlay.covers(visible),
            message=event.message if event is not None else f"showing {overlay.gene}",
        )

    try:
        for event in steps:
            switched = overlay.apply_request()  # a gene switch: painted at once
            if event is None:
                yield snapshot(None) if switched else None
                continue
            overlay.update(event)
            yield snapshot(event)
    finally:
        steps.close()
    return engine.tiles_computed
