"""A predicted-expression overlay painted from tiles as they are embedded.

:class:`LiveOverlay` keeps a one-pixel-per-tile image (the geometry of
:func:`napari_seal.predict.expression.overlay_geometry`) and paints each
:class:`~napari_seal.embedding.on_demand.TilesReady` batch into it: exact tiles as
their pixel, preview samples as their ``k x k`` block (until the exact tiles
replace them). The head's hidden layer of every painted tile is kept, so switching
genes repaints without reading the store. With a run that has a reference bank, each
tile's nearest bank spots are kept too and the reliability map of the painted gene
(:mod:`napari_seal.predict.reliability`) is painted beside it, so the viewer can show it
and hide the unreliable tiles. :func:`iter_live_overlay` runs an
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
    ``uncertainty``: the reliability map on the same grid (NaN where unknown), or None
    without a reference bank (or for a gene outside the run's panel).
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
    uncertainty: np.ndarray | None = None

    def shown(self, max_uncertainty: float | None) -> tuple[np.ndarray, int]:
        """``(image, n_hidden)``: the image with the tiles whose uncertainty is above
        ``max_uncertainty`` blanked (None, or no map: the image itself)."""
        if max_uncertainty is None or self.uncertainty is None:
            return self.image, 0
        mask = self.uncertainty > float(max_uncertainty)  # NaN: not hidden
        hidden = int(np.count_nonzero(mask & np.isfinite(self.image)))
        if not hidden:
            return self.image, 0
        return np.where(mask, np.float32(np.nan), self.image), hidden

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
    reference
        A run with a reference bank (a loaded :class:`~napari_seal.training.runs.
        SealRun` or :class:`~napari_seal.predict.reliability.ReferenceModel`): paint the
        reliability map too. None, or a run without a bank: no map.
    reliability_gene
        The panel gene whose reliability is mapped when ``gene`` is not a panel gene
        (a gene-query score head's label); default: ``gene``.
    """

    def __init__(
        self,
        grid: Any,
        head: Any,
        gene: str,
        *,
        reference: Any = None,
        reliability_gene: str | None = None,
    ) -> None:
        from napari_seal.training.reference_bank import has_bank

        self.grid = grid
        self.head = head
        self.reference = (reference if reference is not None and has_bank(reference)
                          else None)
        self._reliability_gene = reliability_gene
        self.shape = (int(grid.n_rows), int(grid.n_cols))
        rc = grid.rows_cols()
        self.rows, self.cols = rc[:, 0], rc[:, 1]
        n = len(grid.tile_ids)
        self.exact = np.zeros(n, dtype=bool)
        self.image = np.full(self.shape, np.nan, dtype=np.float32)
        #: the reliability map of the painted gene (NaN: unknown or no map)
        self.uncertainty = np.full(self.shape, np.nan, dtype=np.float32)
        self._nbr_index: np.ndarray | None = None  # (n, k) bank rows of known tiles
        self._nbr_sim: np.ndarray | None = None
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
        if (self._hidden is not None
                and self.gene != self.head.genes[self._gene_index[0]]):
            self._reliability_gene = None  # a switch: the map follows the painted gene
        self.gene = self.head.genes[self._gene_index[0]]
        self.image[:] = np.nan
        self.uncertainty[:] = np.nan
        self._exact_img[:] = False
        if self._hidden is None:
            return
        for index, k in self._previews:
            self._paint(index, k)
        done = np.flatnonzero(self.exact)
        self._paint(done, np.ones(done.size, int))

    @property
    def reliability_gene(self) -> str | None:
        """The panel gene the reliability map is of (None: no map)."""
        if self.reference is None:
            return None
        gene = self._reliability_gene or self.gene
        return gene if gene in self.reference.panel.genes else None

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

    def _uncertainty(self, index: np.ndarray) -> np.ndarray | None:
        """The reliability map's value of the tiles ``index`` (known tiles only)."""
        gene = self.reliability_gene
        if gene is None or self._nbr_index is None:
            return None
        from napari_seal.predict.reliability import (
            DEFAULT_METHOD,
            Neighbours,
            uncertainty,
        )

        nbrs = Neighbours(self._nbr_index[index], self._nbr_sim[index],
                          np.ones(len(index), dtype=bool))
        return uncertainty(self.reference, nbrs, gene, method=DEFAULT_METHOD)

    def _paint(self, index: np.ndarray, block_k: np.ndarray) -> None:
        """Paint the known tiles ``index`` (``block_k`` > 1: with preview blocks)."""
        rows, cols = self.rows[index], self.cols[index]
        layers = [(self.image, self._values(self._hidden[index]))]
        unc = self._uncertainty(index)
        if unc is not None:
            layers.append((self.uncertainty, unc))
        exact = block_k <= 1
        for img, v in layers:
            img[rows[exact], cols[exact]] = v[exact]
        self._exact_img[rows[exact], cols[exact]] = True
        for j in np.flatnonzero(~exact):
            k = int(block_k[j])
            r0, c0 = (rows[j] // k) * k, (cols[j] // k) * k
            sl = (slice(r0, r0 + k), slice(c0, c0 + k))
            fill = self._tissue[sl] & ~self._exact_img[sl]
            for img, v in layers:
                img[sl][fill] = v[j]
        # a preview sample is itself an exact tile
        for img, v in layers:
            img[rows[~exact], cols[~exact]] = v[~exact]
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
        if self.reference is not None:
            from napari_seal.predict.reliability import neighbours

            nbrs = neighbours(self.reference, emb)
            if self._nbr_index is None:
                shape = (len(self.exact), nbrs.index.shape[1])
                self._nbr_index = np.zeros(shape, np.int32)
                self._nbr_sim = np.zeros(shape, np.float32)
            self._nbr_index[index], self._nbr_sim[index] = nbrs.index, nbrs.similarity
        ks = np.asarray(event.block_k, dtype=np.int64)
        if (ks > 1).any():
            self._previews.append((index[ks > 1], ks[ks > 1]))
        self._paint(index, ks)
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
            uncertainty=(overlay.uncertainty.copy()
                         if overlay.reliability_gene is not None else None),
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
