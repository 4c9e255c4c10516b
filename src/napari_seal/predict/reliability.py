"""The reliability map: where predicted expression and gene-query scores hold.

A tile is compared with the run's reference bank (its training spots,
:mod:`napari_seal.training.reference_bank`) in SEAL's shared space: the cosine of the
tile's image embedding with the bank spots' omics embeddings picks its ``k`` nearest
training spots. What those measured spots say about a gene (or a weighted query,
``sum_g w_g z_g``) gives three per-tile estimates of how far to trust the prediction:

- ``spread``: the standard deviation of the neighbours' measured z-scores; tissue
  whose look-alikes disagree about the gene;
- ``disagreement``: ``|prediction - mean of the neighbours|`` in z units, two
  independent estimates (the decoder, and retrieval in the omics space) that differ;
- ``expected-error``: the mean of ``|neighbour - prediction|`` over the neighbours,
  the error to expect if the truth were one of them (spread and disagreement in one);
- ``novelty``: ``1 - mean cosine`` to the neighbours; tissue unlike any training spot
  (the same for every gene).

Higher means less reliable. Which one ranks the errors best was measured on her2st
leave-one-section-out (``benchmarks/bench_reliability_her2st.py``, ``docs/queries.md``)
and is :data:`DEFAULT_METHOD`; the uncertainty shown and exported is in z units of the
training spots, so one threshold (:data:`DEFAULT_MAX_UNCERTAINTY`) means the same for
every gene.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import CheckpointError, GeneQueryError
from napari_seal.training.reference_bank import bank_embeddings, bank_zscores, has_bank

__all__ = [
    "DEFAULT_MAX_UNCERTAINTY",
    "DEFAULT_METHOD",
    "K_NEIGHBOURS",
    "METHODS",
    "NEEDS_PREDICTION",
    "Neighbours",
    "ReferenceModel",
    "load_reference",
    "neighbours",
    "require_bank",
    "store_neighbours",
    "tile_uncertainty",
    "uncertainty",
    "uncertainty_image",
]

METHODS = ("spread", "disagreement", "expected-error", "novelty")
#: methods that need the prediction (``predicted_z``)
NEEDS_PREDICTION = ("disagreement", "expected-error")
DEFAULT_METHOD = "spread"
#: neighbours per tile (64: above 16 in every her2st fold, docs/queries.md)
K_NEIGHBOURS = 64
#: "hide where unreliable" hides tiles above this uncertainty (z units)
DEFAULT_MAX_UNCERTAINTY = 1.0


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` nearest bank spots of each embedding.

    Parameters
    ----------
    index
        ``(n, k)`` int32 rows of the bank.
    similarity
        ``(n, k)`` float32 cosine similarities.
    valid
        ``(n,)`` bool: the embedding was finite (unfinished tiles are not).
    """

    index: np.ndarray
    similarity: np.ndarray
    valid: np.ndarray


@dataclass
class ReferenceModel:
    """What the reliability map needs of a run, without its image encoder.

    ``path``, ``config``, ``panel``, the omics encoder ``omics`` and the reference
    ``bank``, duck-compatible with a loaded :class:`~napari_seal.training.runs.SealRun`
    for every function of this module.
    """

    path: Path
    config: Any
    panel: Any
    omics: Any
    bank: Any


def load_reference(run_dir: str | Path) -> ReferenceModel:
    """Load a finished run's panel, omics encoder and bank (no image encoder).

    Raises
    ------
    CheckpointError
        Not a finished run, or its files are damaged.
    GeneQueryError
        The run has no reference bank (trained before banks existed).
    """
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    import napari_seal.training.runs as runs
    from napari_seal.training.config import TrainConfig
    from napari_seal.training.preprocess import GenePanel
    from napari_seal.training.reference_bank import load_bank

    run = Path(run_dir).expanduser()
    if not (run / runs.DONE).is_file() or not (run / runs.HEADS).is_file():
        msg = f"{run} is not a finished SEAL run (no DONE or heads); train one first"
        raise CheckpointError(msg)
    try:
        config = TrainConfig.from_dict(json.loads((run / runs.CONFIG).read_text()))
        panel = GenePanel.load(run / runs.PANEL)
        heads = load_file(str(run / runs.HEADS))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
        msg = f"cannot read the run {run} ({type(err).__name__}: {err}); retrain it"
        raise CheckpointError(msg) from err
    bank = load_bank(run, panel.genes)
    ref = ReferenceModel(run, config, panel, None, bank)
    if bank is None:
        require_bank(ref)  # raises, naming the missing bank
    omics_sd = {
        k[len("omics.") :]: v.float()
        for k, v in heads.items()
        if k.startswith("omics.")
    }
    dec_w = heads.get("decoder.net.0.weight")
    if dec_w is None:
        msg = f"{run / runs.HEADS} has no decoder weights; retrain the run"
        raise CheckpointError(msg)
    omics, _ = runs.build_heads(config, int(dec_w.shape[1]), len(panel))
    try:
        omics.load_state_dict(omics_sd, strict=True)
    except RuntimeError as err:
        msg = f"{run / runs.HEADS} does not fit the run's config (omics): {err}"
        raise CheckpointError(msg) from err
    ref.omics = omics.eval()
    return ref


def require_bank(run: Any) -> None:
    """Raise a :class:`GeneQueryError` saying what to do when ``run`` has no bank."""
    if getattr(run, "omics", None) is None or not has_bank(run):
        path = getattr(run, "path", None)
        msg = (
            f"the run {path or '<in-memory run>'} has no reference bank "
            "(reference.npz), which the reliability map needs; retrain it with "
            "`napari-seal train` (runs trained since banks exist write one)"
        )
        raise GeneQueryError(msg)


def neighbours(
    run: Any, embeddings: np.ndarray, *, k: int = K_NEIGHBOURS, block: int = 4096
) -> Neighbours:
    """The ``k`` nearest bank spots (cosine in SEAL's shared space) of each row."""
    require_bank(run)
    bank = bank_embeddings(run)
    n = int(embeddings.shape[0])
    k = max(1, min(int(k), bank.shape[0]))
    index = np.zeros((n, k), dtype=np.int32)
    sim = np.zeros((n, k), dtype=np.float32)
    valid = np.ones(n, dtype=bool)
    for i in range(0, n, block):
        e = np.asarray(embeddings[i : i + block], dtype=np.float32)
        ok = np.isfinite(e).all(axis=1)
        e = np.where(ok[:, None], e, 0.0)
        e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        s = e @ bank.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        index[i : i + len(e)] = top
        sim[i : i + len(e)] = np.take_along_axis(s, top, axis=1)
        valid[i : i + len(e)] = ok
    return Neighbours(index, sim, valid)


def _query_weights(run: Any, genes: Mapping[str, float] | Sequence[str] | str) -> Any:
    if isinstance(genes, str):
        genes = {genes: 1.0}
    elif not isinstance(genes, Mapping):
        genes = dict.fromkeys(genes, 1.0)
    pos = {g: i for i, g in enumerate(run.panel.genes)}
    missing = [g for g in genes if g not in pos]
    if missing:
        msg = f"not in the run's gene panel: {', '.join(missing)}"
        raise GeneQueryError(msg)
    idx = np.asarray([pos[g] for g in genes], dtype=np.int64)
    w = np.asarray(list(genes.values()), dtype=np.float32)
    return idx, w / max(float(np.abs(w).sum()), 1e-12)


def uncertainty(
    run: Any,
    nbrs: Neighbours,
    genes: Mapping[str, float] | Sequence[str] | str,
    *,
    method: str = DEFAULT_METHOD,
    predicted_z: np.ndarray | None = None,
) -> np.ndarray:
    """Per-embedding uncertainty ``(n,)`` of one gene or weighted query (NaN: invalid).

    Parameters
    ----------
    nbrs
        From :func:`neighbours` / :func:`store_neighbours`.
    genes
        A gene, genes (equal weights) or ``{gene: weight}`` (weights normalised to
        sum 1 in absolute value, as the query score).
    method
        One of :data:`METHODS`.
    predicted_z
        ``(n,)`` the prediction in z units, for ``disagreement``.
    """
    if method not in METHODS:
        msg = f"reliability method {method!r} is not one of {', '.join(METHODS)}"
        raise GeneQueryError(msg)
    if method == "novelty":
        out = 1.0 - nbrs.similarity.mean(axis=1)
    else:
        idx, w = _query_weights(run, genes)
        score = bank_zscores(run)[:, idx] @ w  # each bank spot's query score
        vals = score[nbrs.index]
        if method == "spread":
            out = vals.std(axis=1)
        else:
            if predicted_z is None:
                msg = f"the {method!r} method needs the prediction (predicted_z)"
                raise GeneQueryError(msg)
            pz = np.asarray(predicted_z, np.float32)
            if method == "disagreement":
                out = np.abs(pz - vals.mean(axis=1))
            else:
                out = np.abs(vals - pz[:, None]).mean(axis=1)
    return np.where(nbrs.valid, out, np.nan).astype(np.float32)


_NEIGHBOUR_CACHE: OrderedDict[tuple, tuple[Any, Any, Neighbours]] = OrderedDict()
_NEIGHBOUR_CACHE_SIZE = 4


def store_neighbours(store: Any, run: Any, *, k: int = K_NEIGHBOURS) -> Neighbours:
    """:func:`neighbours` of every tile of a store, cached in memory.

    Keyed by the store (:attr:`EmbeddingStore.cache_key`: reopening the same store
    hits the cache), the set of finished tiles (a store still being embedded is
    recomputed when tiles were added) and the run's omics encoder and bank. Only
    finished tiles are read, block by block (peak memory: one block and its similarity
    matrix). First call on a 200k-tile store with a ~1k-spot bank: ~8 s here
    (``benchmarks/bench_query.py``); later calls: none.
    """
    require_bank(run)
    done = np.asarray(store.tile_done, dtype=bool)
    digest = hashlib.blake2b(np.packbits(done).tobytes(), digest_size=16).hexdigest()
    key = (*store.cache_key, digest, id(run.bank), id(run.omics), int(k))
    hit = _NEIGHBOUR_CACHE.get(key)
    if hit is not None and hit[0] is run.bank and hit[1] is run.omics:  # ids reused
        _NEIGHBOUR_CACHE.move_to_end(key)
        return hit[2]
    rows = None if done.all() else np.flatnonzero(done)
    part = neighbours(run, _FloatRows(store, rows), k=k)
    if rows is None:
        nbrs = part
    else:
        n, kk = store.n_tiles, part.index.shape[1]
        index, sim = np.zeros((n, kk), np.int32), np.zeros((n, kk), np.float32)
        valid = np.zeros(n, dtype=bool)
        index[rows], sim[rows], valid[rows] = part.index, part.similarity, part.valid
        nbrs = Neighbours(index, sim, valid)
    _NEIGHBOUR_CACHE[key] = (run.bank, run.omics, nbrs)
    while len(_NEIGHBOUR_CACHE) > _NEIGHBOUR_CACHE_SIZE:
        _NEIGHBOUR_CACHE.popitem(last=False)
    return nbrs


class _FloatRows:
    """Row blocks of a store's embeddings (all, or the tiles ``rows``) as float32."""

    def __init__(self, store: Any, rows: np.ndarray | None = None) -> None:
        self.store, self.rows = store, rows
        n = int(store.n_tiles) if rows is None else len(rows)
        self.shape = (n, int(store.embed_dim))

    def __getitem__(self, index: slice) -> np.ndarray:
        if self.rows is None:
            return self.store.read_embeddings(index)
        return self.store.read_embeddings(self.rows[index])


def tile_uncertainty(
    store: Any,
    run: Any,
    genes: Sequence[str] | None = None,
    *,
    method: str = DEFAULT_METHOD,
    predicted_z: np.ndarray | None = None,
) -> np.ndarray:
    """``(n_tiles, len(genes))`` uncertainty of each gene (default: the panel).

    For the methods of :data:`NEEDS_PREDICTION` pass ``predicted_z``
    ``(n_tiles, len(genes))``.
    """
    genes = list(run.panel.genes if genes is None else genes)
    nbrs = store_neighbours(store, run)
    cols = [
        uncertainty(
            run,
            nbrs,
            g,
            method=method,
            predicted_z=None if predicted_z is None else predicted_z[:, j],
        )
        for j, g in enumerate(genes)
    ]
    if not cols:
        return np.zeros((store.n_tiles, 0), np.float32)
    return np.stack(cols, axis=1)


def uncertainty_image(
    store: Any,
    run: Any,
    genes: Mapping[str, float] | Sequence[str] | str,
    *,
    method: str = DEFAULT_METHOD,
) -> tuple[Any, tuple[float, float], tuple[float, float]]:
    """The uncertainty of a gene or query as a lazy image on the tile grid.

    Same geometry as :func:`napari_seal.predict.expression.expression_image`
    (``(n_rows, n_cols)`` float32, NaN off tissue; scale and translate in um).
    Methods that need the prediction of each tile are not offered here.
    """
    import dask
    import dask.array as da

    from napari_seal.predict.expression import overlay_geometry

    if method in NEEDS_PREDICTION:
        msg = "uncertainty_image offers 'spread' and 'novelty' (no prediction needed)"
        raise GeneQueryError(msg)
    require_bank(run)
    _query_weights(run, genes)  # unknown genes fail now, not when painted
    shape = (int(store.grid.n_rows), int(store.grid.n_cols))
    rows, cols = store.rows_cols

    def paint() -> np.ndarray:
        values = uncertainty(run, store_neighbours(store, run), genes, method=method)
        img = np.full(shape, np.nan, dtype=np.float32)
        img[rows, cols] = values
        return img

    label = genes if isinstance(genes, str) else "-".join(sorted(genes))
    name = f"napari-seal-uncertainty-{method}-{label}-{id(run.bank)}-{id(store)}"
    image = da.from_delayed(
        dask.delayed(paint, name=name)(), shape, dtype=np.float32, name=name
    )
    scale, translate = overlay_geometry(store)
    return image, scale, translate
