"""Embed what is on screen first, writing through into the resumable store.

:class:`OnDemandEmbedder` is the QuPath-style "tiles computed on request" source of
the live overlay (CONVENTIONS 3b): given a view rectangle (micrometres, slide frame)
it embeds the tissue tiles that intersect it, nearest the view centre first, then a
margin around it, and writes each batch into the same store
:func:`napari_seal.embedding.run.iter_embed` fills (same grid, signature and
inference session; per-tile ``done`` flags, :meth:`StoreWriter.write_tiles`), so a
later ``embed``, ``predict`` or ``query`` reuses every finished tile. Tiles the store
already holds are read back instead of recomputed.

Zoomed out (more tiles in view than ``preview_tiles``), the view is first sampled
coarsely: one tile per ``k x k`` block, painted as a block and marked as a preview,
then the gaps. :meth:`set_view` (any thread, O(1)) re-prioritises at the next
batch; finished tiles are never discarded; :meth:`cancel` stops at the next batch.

No napari or Qt here: the viewer glue lives in ``napari_seal._widgets``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.embedding.inputs import (
    default_store_path,
    resolve_encoder,
    resolve_slide,
    tiling_for,
)
from napari_seal.embedding.store import build_signature, open_or_create_store
from napari_seal.errors import BadInputError

__all__ = ["OnDemandEmbedder", "TilesReady"]

# a new store gets the chunking batch `embed` gives it (8 x its default batch)
STORE_CHUNK_TILES = 512


@dataclass
class TilesReady:
    """One batch of tiles whose embeddings are known (a progress-like event).

    Attributes
    ----------
    index
        Positions in the grid's ``tile_ids``.
    embeddings
        ``(len(index), D)`` float32.
    block_k
        ``(len(index),)`` int: 1 for an exact tile, ``k > 1`` for a preview sample
        standing for its ``k x k`` block.
    computed
        True when the encoder ran (False: read back from the store).
    view_done, view_total
        Visible tissue tiles known so far / in the current view.
    tiles_computed
        Tiles this embedder has computed in all.
    generation
        The view generation the batch was chosen for.
    """

    index: np.ndarray
    embeddings: np.ndarray
    block_k: np.ndarray
    computed: bool
    view_done: int
    view_total: int
    tiles_computed: int
    generation: int
    stage: str = "view"
    unit: str = "tiles"
    message: str = ""
    info: dict = field(default_factory=dict)

    @property
    def done(self) -> int:
        """Visible tiles known (for progress bars)."""
        return self.view_done

    @property
    def total(self) -> int:
        """Visible tiles in view."""
        return self.view_total

    @property
    def view_complete(self) -> bool:
        """Every visible tile is known exactly."""
        return self.view_done >= self.view_total


class OnDemandEmbedder:
    """Embed the tiles of a view rectangle first, into a resumable store.

    Parameters
    ----------
    source
        A ``Slide``, a ``SpatialSample`` or a path (as :func:`iter_embed`).
    encoder_or_run
        An encoder name, ``Encoder``, SEAL run folder or loaded run.
    store
        The embedding store (default: the workspace store of this slide and model,
        :func:`~napari_seal.embedding.inputs.default_store_path`, shared with
        ``embed``/``predict``/``query``).
    batch_size
        Tiles per forward pass (small: the view re-prioritises between batches).
    device, precision, memory_format
        As :func:`~napari_seal.embedding.run.iter_embed` (same signature rules).
    mpp
        Slide pixel size override.
    margin
        Fraction of the view's size added on each side, computed after the view.
    preview_tiles
        More visible tiles than this to compute: sample one per block first.
    load_block
        Tiles read back from the store per step.
    """

    def __init__(
        self,
        source: Any,
        encoder_or_run: Any,
        store: str | os.PathLike | None = None,
        *,
        batch_size: int = 16,
        device: str | None = None,
        precision: str = "auto",
        memory_format: str = "auto",
        mpp: float | None = None,
        margin: float = 0.25,
        preview_tiles: int = 256,
        load_block: int = 4096,
    ) -> None:
        if batch_size < 1:
            msg = f"batch size must be at least 1, got {batch_size}"
            raise BadInputError(msg)
        from napari_seal.models.inference import InferenceSession
        from napari_seal.tiling.grid import make_tile_grid

        self.slide = resolve_slide(source, mpp=mpp)
        self.resolved = resolve_encoder(encoder_or_run, device=device)
        encoder = self.resolved.encoder
        self.session = InferenceSession(
            encoder,
            batch_size=batch_size,
            device=device,
            precision=precision,
            memory_format=memory_format,
        )
        config = tiling_for(encoder)
        self.grid = make_tile_grid(self.slide, config=config)
        signature = build_signature(
            self.slide,
            self.resolved,
            config,
            max_tiles=None,
            dtype="float32",
            device=device,
            precision=self.session.plan.precision,
        )
        if store is None:
            store = default_store_path(self.slide, self.resolved)
        self.store_path = Path(store)
        self.writer = open_or_create_store(
            self.store_path,
            signature=signature,
            grid=self.grid,
            embed_dim=int(encoder.embed_dim),
            chunk_tiles=STORE_CHUNK_TILES,
            dtype="float32",
            precision=self.session.plan.precision,
            inference=self.session.info(),
        )
        self.batch_size = int(batch_size)
        self.margin = float(margin)
        self.preview_tiles = max(1, int(preview_tiles))
        self.load_block = max(1, int(load_block))
        n = len(self.grid.tile_ids)
        self.stored = self.writer.tiles_done()  # in the store
        self.known = np.zeros(n, dtype=bool)  # delivered to the consumer
        rc = self.grid.rows_cols()
        self.rows, self.cols = rc[:, 0], rc[:, 1]
        self._centres_um = self.grid.centres_xy * float(self.grid.slide_mpp)
        self._pos = np.full(int(self.grid.n_rows) * int(self.grid.n_cols), -1, np.int64)
        self._pos[self.grid.tile_ids] = np.arange(n)
        self.tiles_computed = 0
        self.timings = {"read_s": 0.0, "encode_s": 0.0, "write_s": 0.0}
        self._lock = threading.Condition()
        self._rect: tuple[float, float, float, float] | None = None
        self._generation = 0
        self._built = -1
        self._queue = np.zeros(0, np.int64)
        self._queue_k = np.zeros(0, np.int64)
        self._visible = np.zeros(0, np.int64)
        self._cancelled = False

    # -- view ------------------------------------------------------------------
    @property
    def generation(self) -> int:
        """Incremented by every :meth:`set_view`."""
        return self._generation

    def set_view(self, x0_um: float, y0_um: float, x1_um: float, y1_um: float) -> None:
        """Make ``[x0, x1] x [y0, y1]`` the view (cheap, thread-safe)."""
        rect = (
            min(x0_um, x1_um),
            min(y0_um, y1_um),
            max(x0_um, x1_um),
            max(y0_um, y1_um),
        )
        with self._lock:
            if rect != self._rect:
                self._rect = rect
                self._generation += 1
                self._lock.notify_all()

    def cancel(self) -> None:
        """Stop :meth:`iter_run` before its next batch (finished tiles are kept)."""
        with self._lock:
            self._cancelled = True
            self._lock.notify_all()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def tiles_in(self, rect: tuple[float, float, float, float]) -> np.ndarray:
        """Positions of the tissue tiles intersecting ``rect`` (um), row-major."""
        g = self.grid
        stride_um = g.stride_l0 * g.slide_mpp
        tile_um = g.tile_size_l0 * g.slide_mpp
        x0, y0, x1, y1 = rect

        def span(lo: float, hi: float, n: int) -> tuple[int, int]:
            a = max(0, math.floor((lo - tile_um) / stride_um) + 1)
            b = min(n - 1, math.floor(hi / stride_um))
            return a, b

        c0, c1 = span(x0, x1, int(g.n_cols))
        r0, r1 = span(y0, y1, int(g.n_rows))
        if c1 < c0 or r1 < r0:
            return np.zeros(0, np.int64)
        rr, cc = np.meshgrid(
            np.arange(r0, r1 + 1), np.arange(c0, c1 + 1), indexing="ij"
        )
        pos = self._pos[(rr * int(g.n_cols) + cc).ravel()]
        return pos[pos >= 0]

    def visible_tiles(self) -> np.ndarray:
        """Positions of the tissue tiles in the current view."""
        with self._lock:
            rect = self._rect
        return self.tiles_in(rect) if rect is not None else np.zeros(0, np.int64)

    def _by_distance(self, pos: np.ndarray, cx: float, cy: float) -> np.ndarray:
        if pos.size == 0:
            return pos
        centres = self._centres_um[pos]
        d = (centres[:, 0] - cx) ** 2 + (centres[:, 1] - cy) ** 2
        return pos[np.argsort(d, kind="stable")]

    def _build_queue(self, rect: tuple[float, float, float, float]) -> None:
        x0, y0, x1, y1 = rect
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        mx, my = self.margin * (x1 - x0), self.margin * (y1 - y0)
        visible = self.tiles_in(rect)
        around = self.tiles_in((x0 - mx, y0 - my, x1 + mx, y1 + my))
        around = np.setdiff1d(around, visible, assume_unique=True)
        self._visible = visible
        todo = visible[~self.known[visible]]
        parts, ks = [], []
        n_compute = int((~self.stored[todo]).sum())
        k = math.ceil(math.sqrt(n_compute / self.preview_tiles)) if n_compute else 1
        if k > 1:
            preview = self._preview(visible, k)
            parts.append(self._by_distance(preview, cx, cy))
            ks.append(np.full(preview.size, k, np.int64))
        rest = self._by_distance(todo, cx, cy)
        parts.append(rest)
        ks.append(np.ones(rest.size, np.int64))
        ring = self._by_distance(around[~self.known[around]], cx, cy)
        parts.append(ring)
        ks.append(np.ones(ring.size, np.int64))
        self._queue = np.concatenate(parts)
        self._queue_k = np.concatenate(ks)

    def _preview(self, visible: np.ndarray, k: int) -> np.ndarray:
        """One tile per ``k x k`` block of the view (nearest the block centre).

        Blocks that already hold a known tile are skipped.
        """
        r, c = self.rows[visible], self.cols[visible]
        block = (r // k) * (int(self.grid.n_cols) // k + 1) + c // k
        off = np.abs(r % k - k // 2) + np.abs(c % k - k // 2)
        has = np.unique(block[self.known[visible]])
        order = np.lexsort((off, block))
        first = np.unique(block[order], return_index=True)[1]
        pick = visible[order[first]]
        return pick[~np.isin(block[order[first]], has)]

    # -- work ------------------------------------------------------------------
    def _next(self) -> tuple[np.ndarray, np.ndarray, bool] | None:
        """The next batch ``(positions, block_k, compute)``, or None when idle."""
        with self._lock:
            if self._built != self._generation and self._rect is not None:
                self._built = self._generation
                self._build_queue(self._rect)
        open_ = ~self.known[self._queue]
        queue, ks = self._queue[open_], self._queue_k[open_]
        self._queue, self._queue_k = queue, ks
        if queue.size == 0:
            return None
        stored = self.stored[queue]
        if stored.any():  # read back what the store has (cheap, no model)
            take = np.flatnonzero(stored)[: self.load_block]
            return queue[take], ks[take], False
        _, first = np.unique(queue[: 4 * self.batch_size], return_index=True)
        take = np.sort(first)[: self.batch_size]
        return queue[take], ks[take], True

    def _event(
        self,
        index: np.ndarray,
        emb: np.ndarray,
        ks: np.ndarray,
        *,
        computed: bool,
        generation: int,
    ) -> TilesReady:
        visible = self._visible
        done = int(self.known[visible].sum())
        return TilesReady(
            index=index,
            embeddings=emb,
            block_k=ks,
            computed=computed,
            view_done=done,
            view_total=int(visible.size),
            tiles_computed=self.tiles_computed,
            generation=generation,
            message=f"{done}/{visible.size} tiles in view",
            info={"store": str(self.store_path)},
        )

    def step(self) -> TilesReady | None:
        """Compute (or read back) one batch; None when the view and margin are done."""
        from napari_seal.tiling.grid import read_tiles

        generation = self._generation
        nxt = self._next()
        if nxt is None:
            return None
        index, ks, compute = nxt
        if compute:
            t0 = time.perf_counter()
            tiles = read_tiles(self.slide, self.grid, index)
            t1 = time.perf_counter()
            emb = self.session(tiles)
            t2 = time.perf_counter()
            self.writer.write_tiles(index, emb)
            t = self.timings
            t["read_s"] += t1 - t0
            t["encode_s"] += t2 - t1
            t["write_s"] += time.perf_counter() - t2
            self.stored[index] = True
            self.tiles_computed += int(index.size)
        else:
            order = np.argsort(index)
            emb = np.empty(
                (index.size, int(self.writer.embeddings.shape[1])), np.float32
            )
            emb[order] = np.asarray(
                self.writer.embeddings.get_orthogonal_selection(
                    (index[order], slice(None))
                ),
                dtype=np.float32,
            )
        self.known[index] = True
        return self._event(index, emb, ks, computed=compute, generation=generation)

    def iter_run(
        self, *, until_view_complete: bool = False, idle_s: float = 0.1
    ) -> Generator[TilesReady | None, None, int]:
        """Run until cancelled: yield each batch, ``None`` now and then when idle.

        Parameters
        ----------
        until_view_complete
            Return once every visible tile is known (the view, not the margin).
        idle_s
            How long to wait for a new view between idle yields.

        Returns
        -------
        int
            Tiles computed.
        """
        while not self._cancelled:
            event = self.step()
            if event is not None:
                yield event
                if until_view_complete and event.view_complete:
                    break
                continue
            if until_view_complete and self._rect is not None:
                break
            with self._lock:
                if not self._cancelled and self._built == self._generation:
                    self._lock.wait(idle_s)
            yield None
        return self.tiles_computed
