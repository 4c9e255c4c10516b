"""Expression prediction from an embedding store, and lazy per-gene overlays.

- :func:`open_store` reads a store written by
  :func:`napari_seal.embedding.run.iter_embed`.
- :func:`expression_head` turns a SEAL run (its image->gene decoder) or a saved ridge
  head into an :class:`~napari_seal.predict.heads.ExpressionHead`.
- :func:`expression_image` gives one gene as a lazy 2-D dask image on the tile grid
  (one pixel per tile, NaN off tissue) with ``scale``/``translate`` in micrometres.
  The head's hidden layer (n_tiles x 512 for the decoder) is computed once per store
  and head and kept in memory; switching genes is one matrix-vector product on it and
  never reads or recomputes the embeddings.
- :func:`spot_predictions` / :func:`compare_at_spots` put predictions next to the
  measured expression of an ST sample (defined in :mod:`napari_seal.predict.spots`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.embedding.store import (
    STORE_FORMAT,
    grid_from_attrs,
    tile_done_flags,
)
from napari_seal.errors import BadInputError
from napari_seal.predict.heads import (
    ExpressionHead,
    head_from_linear,
    head_from_module,
    head_from_run_dir,
)

__all__ = [
    "EmbeddingStore",
    "expression_head",
    "expression_image",
    "open_store",
    "predict_tiles",
    "tile_predictions",
]


@dataclass
class EmbeddingStore:
    """An embedding store opened for reading.

    Parameters
    ----------
    path
        The zarr store.
    group
        The open zarr group.
    grid
        The :class:`~napari_seal.tiling.grid.TileGrid` of the embedded tiles.
    signature
        What the store was made from (slide, encoder, tiling...).
    attrs
        All group attributes.
    """

    path: Path
    group: Any
    grid: Any
    signature: dict
    attrs: dict
    tile_ids: np.ndarray
    coords: np.ndarray
    stats: dict = field(
        default_factory=lambda: {"embedding_reads": 0, "hidden_computed": 0}
    )
    _cache: dict = field(default_factory=dict, repr=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False)

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return len(self.tile_ids)

    @property
    def embed_dim(self) -> int:
        """Embedding size D."""
        return int(self.attrs["embed_dim"])

    @property
    def embeddings(self) -> Any:
        """``(n_tiles, D)`` lazy dask array (NaN rows: chunks not embedded yet)."""
        import dask.array as da

        return da.from_zarr(self.group["embeddings"])

    @property
    def tile_done(self) -> np.ndarray:
        """``(n_tiles,)`` bool: tile or chunk done (re-read until all are)."""
        cached = self._cache.get("_tile_done")
        if cached is not None:
            return cached
        per_tile = tile_done_flags(
            self.group, self.n_tiles, int(self.attrs["chunk_tiles"])
        )
        if per_tile.all():
            self._cache["_tile_done"] = per_tile
        return per_tile

    @property
    def cache_key(self) -> tuple:
        """Identity of the store's content: its resolved path and file stamps.

        Changes when chunks are written (a store being embedded), so in-memory caches
        keyed by it are never stale.
        """
        stamps = []
        for name in ("zarr.json", "embeddings/zarr.json", "done/zarr.json"):
            try:
                stamps.append((self.path / name).stat().st_mtime_ns)
            except OSError:
                stamps.append(None)
        return (str(Path(self.path).resolve()), *stamps)

    @property
    def complete(self) -> bool:
        """Whether every chunk is embedded."""
        return bool(np.all(self.group["done"][:]))

    @property
    def rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        """Grid row and column of each tile (``tile_id = row * n_cols + col``)."""
        cached = self._cache.get("_rows_cols")
        if cached is None:
            n_cols = int(self.grid.n_cols)
            cached = (self.tile_ids // n_cols, self.tile_ids % n_cols)
            self._cache["_rows_cols"] = cached
        return cached

    @property
    def centres_xy(self) -> np.ndarray:
        """``(n, 2)`` level-0 ``(x, y)`` tile centres (float64, exact)."""
        return np.asarray(self.grid.centres_xy, dtype=np.float64)

    def read_embeddings(self, index: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Read embeddings (float32) from disk; counted in ``stats``."""
        self.stats["embedding_reads"] += 1
        arr = self.group["embeddings"]
        try:
            if isinstance(index, np.ndarray):
                return np.asarray(
                    arr.get_orthogonal_selection((index, slice(None))), np.float32
                )
            return np.asarray(arr[index], dtype=np.float32)
        except (RuntimeError, ValueError, OSError) as err:  # codec / damaged chunk
            msg = (
                f"cannot read the embeddings of {self.path} ({type(err).__name__}: "
                f"{err}); a chunk file is damaged: delete the store and run "
                "`napari-seal embed` again"
            )
            raise BadInputError(msg) from err

    def hidden(self, head: ExpressionHead, *, block_tiles: int = 16384) -> np.ndarray:
        """The head's hidden layer for every tile, computed once and cached.

        Embeddings are streamed from disk block by block, so peak memory is the
        hidden layer plus one block. While the store is still being embedded, tiles
        finished since the last call are filled in (only those are read).
        """
        with self._lock:
            done = self.tile_done
            cached = self._cache.get(head.key)
            if cached is not None:
                hid, had = cached
                new = np.flatnonzero(done & ~had)
                if new.size:
                    hid[new] = head.hidden(self.read_embeddings(new))
                    self._cache[head.key] = (hid, done)
                return hid
            parts = []
            for i in range(0, self.n_tiles, block_tiles):
                emb = self.read_embeddings(slice(i, min(self.n_tiles, i + block_tiles)))
                parts.append(head.hidden(np.nan_to_num(emb, nan=0.0)))
            hid = np.ascontiguousarray(np.concatenate(parts, axis=0))
            self.stats["hidden_computed"] += 1
            # one head at a time (bounded memory); keep the small per-tile caches
            keep = {k: v for k, v in self._cache.items() if k.startswith("_")}
            self._cache = {**keep, head.key: (hid, done)}
            return hid


def open_store(path: str | os.PathLike) -> EmbeddingStore:
    """Open an embedding store written by :func:`napari_seal.embedding.run.iter_embed`.

    Raises
    ------
    BadInputError
        The path is not an embedding store.
    """
    import zarr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        msg = f"{path} is not an embedding store; create one with `napari-seal embed`"
        raise BadInputError(msg)
    damaged = (
        f"{path} is a damaged embedding store; delete it and run `napari-seal embed` "
        "again"
    )
    try:
        group = zarr.open_group(path, mode="r")
        attrs = dict(group.attrs)
        has_embeddings = "embeddings" in group
    except (ValueError, OSError, KeyError, TypeError) as err:  # bad zarr.json
        msg = f"{damaged} ({type(err).__name__}: {err})"
        raise BadInputError(msg) from err
    if attrs.get("format") != STORE_FORMAT or not has_embeddings:
        msg = (
            f"{path} is not a napari-seal embedding store ({STORE_FORMAT}); create "
            "one with `napari-seal embed`"
        )
        raise BadInputError(msg)
    try:
        _check_store(group, attrs)
        tile_ids = np.asarray(group["tile_ids"][:], dtype=np.int64)
        coords = np.asarray(group["coords"][:], dtype=np.int64)
        frac = group["tissue_fraction"][:] if "tissue_fraction" in group else None
        grid = grid_from_attrs(attrs["grid"], tile_ids, coords, frac)
    except (ValueError, KeyError, TypeError, RuntimeError, OSError) as err:
        msg = f"{damaged} ({type(err).__name__}: {err})"
        raise BadInputError(msg) from err
    return EmbeddingStore(
        path, group, grid, dict(attrs["signature"]), attrs, tile_ids, coords
    )


def _check_store(group: Any, attrs: dict) -> None:
    """Raise ``ValueError`` naming the first array or attribute off the format."""
    for name in ("tile_ids", "coords", "done"):
        if name not in group:
            msg = f"the array {name!r} is missing"
            raise ValueError(msg)
    for key in ("grid", "signature", "chunk_tiles", "embed_dim"):
        if key not in attrs:
            msg = f"the attribute {key!r} is missing"
            raise ValueError(msg)
    if not isinstance(attrs["grid"], dict) or not isinstance(attrs["signature"], dict):
        msg = "the attributes 'grid' and 'signature' must be JSON objects"
        raise ValueError(msg)
    emb, ids, xy = group["embeddings"], group["tile_ids"], group["coords"]
    n, d = ids.shape[0] if ids.ndim == 1 else -1, int(attrs["embed_dim"])
    want = {
        "embeddings": (emb, (n, d), "f"),
        "tile_ids": (ids, (n,), "iu"),
        "coords": (xy, (n, 2), "iu"),
        "done": (group["done"], None, "b"),
    }
    for name, (arr, shape, kinds) in want.items():
        if (shape is not None and tuple(arr.shape) != shape) or (
            np.dtype(arr.dtype).kind not in kinds
        ):
            msg = (
                f"the array {name!r} has shape {tuple(arr.shape)} and dtype "
                f"{arr.dtype}; expected {shape or '(n_chunks,)'} of kind {kinds!r}"
            )
            raise ValueError(msg)


def _as_store(store: EmbeddingStore | str | os.PathLike) -> EmbeddingStore:
    return store if isinstance(store, EmbeddingStore) else open_store(store)


def expression_head(
    run_or_head: Any, *, embed_dim: int | None = None
) -> ExpressionHead:
    """Return the expression head of a SEAL run or a saved probe.

    Parameters
    ----------
    run_or_head
        An :class:`ExpressionHead`, a loaded run (``.decoder`` + ``.panel``), a run
        folder, a head file saved by ``bench --save-head``, or a loaded head.
    embed_dim
        Embedding size (needed for a loaded linear head without it).

    Returns
    -------
    ExpressionHead
    """
    if isinstance(run_or_head, ExpressionHead):
        return run_or_head
    if isinstance(run_or_head, str | os.PathLike):
        path = Path(run_or_head)
        if path.is_dir():
            light = head_from_run_dir(path)  # decoder only: no encoder, no torch
            if light is not None:
                return light
            from napari_seal.training.runs import load_run

            run_or_head = load_run(path)
        elif path.is_file():
            from napari_seal.predict.saved_probe import load_head

            run_or_head = load_head(path)
        else:
            msg = f"{path} is neither a run folder nor a head file; check the path"
            raise BadInputError(msg)
    if hasattr(run_or_head, "decoder") and hasattr(run_or_head, "panel"):
        genes = list(run_or_head.panel.genes)
        dim = getattr(getattr(run_or_head, "encoder", None), "embed_dim", embed_dim)
        return head_from_module(
            run_or_head.decoder, genes, name="SEAL decoder", embed_dim=dim
        )
    genes = getattr(run_or_head, "genes", None)
    if genes is None:
        msg = (
            f"cannot use {type(run_or_head).__name__} as an expression head; pass a "
            "SEAL run folder or a head saved by `napari-seal bench --save-head`"
        )
        raise BadInputError(msg)
    from napari_seal.predict.saved_probe import apply_head

    dim = int(
        embed_dim
        or getattr(run_or_head, "n_features", 0)
        or getattr(run_or_head, "embed_dim", 0)
        or 0
    )
    if not dim:
        msg = "the head does not record its embedding size; pass embed_dim"
        raise BadInputError(msg)
    return head_from_linear(
        lambda e: apply_head(run_or_head, e),
        list(genes),
        embed_dim=dim,
        name="ridge head",
    )


def predict_tiles(
    store: EmbeddingStore | str | os.PathLike,
    head: Any,
    *,
    genes: Sequence[str] | None = None,
) -> Any:
    """Per-tile predicted expression as a lazy ``(n_tiles, G)`` dask array.

    Computed block by block from the embeddings when computed (nothing is cached);
    unfinished chunks give NaN rows.
    """
    store = _as_store(store)
    head = expression_head(head, embed_dim=store.embed_dim)
    index = head.index(genes)
    emb = store.embeddings

    def block(e: np.ndarray) -> np.ndarray:
        e = np.asarray(e, dtype=np.float32)
        bad = ~np.isfinite(e).all(axis=1)
        out = head.output(head.hidden(np.nan_to_num(e, nan=0.0)), index)
        out[bad] = np.nan
        return out

    return emb.map_blocks(
        block, dtype=np.float32, chunks=(emb.chunks[0], (len(index),))
    )


def overlay_geometry(
    store: EmbeddingStore,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """``(scale_um, translate_um)`` in napari ``(row, col)`` order (the grid's).

    Pixel ``(r, c)`` of an overlay is drawn on the centre of tile ``(r, c)``; one
    pixel spans one stride, so with a stride equal to the tile size it covers the
    tile exactly.
    """
    scale = tuple(float(v) for v in store.grid.scale_um)
    translate = tuple(float(v) for v in store.grid.translate_um)
    return scale, translate


def expression_image(
    store: EmbeddingStore | str | os.PathLike, head: Any, gene: str
) -> tuple[Any, tuple[float, float], tuple[float, float]]:
    """One gene's predicted expression as a lazy image on the tile grid.

    Parameters
    ----------
    store
        An open store (keep it: it caches the head's hidden layer) or its path.
    head
        An expression head, a run or a saved probe (see :func:`expression_head`).
    gene
        The gene to paint.

    Returns
    -------
    image : dask.array.Array
        ``(n_rows, n_cols)`` float32, NaN where there is no (finished) tissue tile.
    scale_um, translate_um
        napari ``scale`` and ``translate`` (row, col) in micrometres.
    """
    import dask
    import dask.array as da

    store = _as_store(store)
    head = expression_head(head, embed_dim=store.embed_dim)
    index = head.index([gene])
    shape = (int(store.grid.n_rows), int(store.grid.n_cols))
    rows, cols = store.rows_cols

    def paint() -> np.ndarray:
        values = head.output(store.hidden(head), index)[:, 0]
        values = np.where(store.tile_done, values, np.nan)
        img = np.full(shape, np.nan, dtype=np.float32)
        img[rows, cols] = values
        return img

    name = f"napari-seal-expr-{head.key}-{head.genes[index[0]]}-{id(store)}"
    image = da.from_delayed(
        dask.delayed(paint, name=name)(), shape, dtype=np.float32, name=name
    )
    scale, translate = overlay_geometry(store)
    return image, scale, translate


def tile_predictions(
    store: EmbeddingStore | str | os.PathLike,
    head: Any,
    *,
    genes: Sequence[str] | None = None,
) -> Any:
    """Per-tile predictions as AnnData (obs = tile ids, ``obsm["spatial"]`` = centres).

    Returns
    -------
    anndata.AnnData
        ``X`` (n_tiles, G) float32; obs ``tile_id``, ``row``, ``col``, ``done``;
        ``obsm["spatial"]`` level-0 ``(x, y)`` tile centres.
    """
    import anndata as ad
    import pandas as pd

    store = _as_store(store)
    head = expression_head(head, embed_dim=store.embed_dim)
    index = head.index(genes)
    values = head.output(store.hidden(head), index)
    done = store.tile_done
    values[~done] = np.nan
    rows, cols = store.rows_cols
    obs = pd.DataFrame(
        {"tile_id": store.tile_ids, "row": rows, "col": cols, "done": done},
        index=[str(t) for t in store.tile_ids],
    )
    var = pd.DataFrame(index=[head.genes[i] for i in index])
    adata = ad.AnnData(X=values, obs=obs, var=var)
    adata.obsm["spatial"] = store.centres_xy
    adata.uns["napari_seal"] = {
        "kind": "tile_predictions",
        "store": str(store.path),
        "head": head.name,
        "tile_size_l0": float(store.grid.tile_size_l0),
        "mpp": float(store.grid.slide_mpp),
    }
    return adata
