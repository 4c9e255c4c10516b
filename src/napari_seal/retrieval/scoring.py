"""Scoring gene queries (core of :mod:`napari_seal.retrieval.gene_query`, see its docs).

Routes, the query vector, the omics embedding of a query, the L2-normalised
embedding cache of a store and per-tile / per-embedding scores.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError, EncoderMismatchError, GeneQueryError
from napari_seal.retrieval.exemplar import exemplar_embedding, has_bank
from napari_seal.retrieval.gene_signatures import GeneQuery, parse_query
from napari_seal.training.omics_space import (
    encode_expression,
    omics_input,
    sample_omics_input,
)

__all__ = [
    "DEFAULT_ROUTE",
    "LEVEL_SD",
    "OMICS_QUERIES",
    "ROUTES",
    "UnitEmbeddings",
    "check_store_run",
    "encode_expression",
    "load_run",
    "omics_input",
    "parse_run_query",
    "query_embedding",
    "query_expression",
    "resolve_omics_query",
    "require_route",
    "sample_omics_input",
    "score_embeddings",
    "score_store",
    "unit_embeddings",
]

log = logging.getLogger(__name__)

ROUTES = ("omics", "decoder")
#: the route a query takes unless told otherwise (chosen on LOSO: docs/queries.md)
DEFAULT_ROUTE = "omics"
#: z-score (in training standard deviations) given to each query gene of weight 1
LEVEL_SD = 2.0


def load_run(run: Any) -> Any:
    """Return a loaded SEAL run (a run folder is loaded with ``runs.load_run``)."""
    if isinstance(run, str | os.PathLike):
        from napari_seal.training.runs import load_run as _load

        return _load(Path(run))
    if not hasattr(run, "panel"):
        msg = (
            f"cannot use {type(run).__name__} as a SEAL run; pass a run folder "
            "written by `napari-seal train`"
        )
        raise BadInputError(msg)
    return run


def _run_label(run: Any) -> str:
    path = getattr(run, "path", None)
    return str(Path(path).resolve()) if path is not None else "<in-memory run>"


def require_route(run: Any, route: str) -> None:
    """Check that ``run`` has what ``route`` needs.

    Raises
    ------
    GeneQueryError
        Unknown route, or a run without an omics encoder (``omics``) or without an
        image->gene decoder (``decoder``).
    """
    if route not in ROUTES:
        msg = f"route {route!r} is not a query route; use one of {', '.join(ROUTES)}"
        raise GeneQueryError(msg)
    if route == "omics" and getattr(run, "omics", None) is None:
        msg = (
            f"the run {_run_label(run)} has no omics encoder, so it cannot embed a "
            "gene query; use --route decoder (predicted expression), or train a "
            "SEAL run with `napari-seal train`, which saves one"
        )
        raise GeneQueryError(msg)
    if route == "decoder" and getattr(run, "decoder", None) is None:
        msg = (
            f"the run {_run_label(run)} has no image->gene decoder; use --route "
            "omics, or train a SEAL run with `napari-seal train`"
        )
        raise GeneQueryError(msg)


def parse_run_query(
    run: Any,
    genes: Any = None,
    *,
    signature: str | os.PathLike | None = None,
    known_genes: Sequence[str] | None = None,
) -> GeneQuery:
    """Parse a query and resolve it against the run's panel (see ``parse_query``)."""
    if isinstance(genes, GeneQuery):
        panel = set(run.panel.genes)
        missing = [g for g in genes.genes if g not in panel]
        if not missing:
            return genes
        genes = dict(zip(genes.genes, genes.weights, strict=False))
    if known_genes is None:
        known_genes = getattr(run, "known_genes", None)
    return parse_query(
        genes, signature=signature, panel=list(run.panel.genes), known_genes=known_genes
    )


def query_expression(
    run: Any, query: GeneQuery, *, level_sd: float = LEVEL_SD
) -> np.ndarray:
    """The query as a ``(G,)`` z-scored panel vector.

    Query gene ``g`` gets ``level_sd * w_g`` (its weight times ``level_sd`` training
    standard deviations); every other gene 0 = its training mean, i.e. "average tissue
    except for these genes", a profile inside the range the omics encoder was trained
    on (0 is the most typical value of each gene, not its absence).
    """
    panel = run.panel
    pos = {g: i for i, g in enumerate(panel.genes)}
    z = np.zeros(len(panel.genes), dtype=np.float32)
    for gene, weight in zip(query.genes, query.weights, strict=True):
        z[pos[gene]] = float(level_sd) * float(weight)
    return z


OMICS_QUERIES = ("auto", "exemplar", "profile")
_warned_profile: set[int] = set()


def resolve_omics_query(run: Any, omics_query: str = "auto") -> str:
    """``"exemplar"`` or ``"profile"``: what ``omics_query`` means for ``run``.

    ``"auto"`` is exemplar when the run has a reference bank, else profile (warned
    once per run).

    Raises
    ------
    GeneQueryError
        ``omics_query`` is not one of :data:`OMICS_QUERIES`.
    """
    if omics_query not in OMICS_QUERIES:
        msg = (
            f"omics_query {omics_query!r} is not one of {', '.join(OMICS_QUERIES)}"
        )
        raise GeneQueryError(msg)
    if omics_query != "auto":
        return omics_query
    if has_bank(run):
        return "exemplar"
    if id(run) not in _warned_profile:
        _warned_profile.add(id(run))
        log.warning(
            "the run %s has no reference bank (trained before banks existed):"
            " the omics route embeds a synthetic profile, which ranks tissue "
            "poorly on new sections; retrain, or use --route decoder",
            _run_label(run),
        )
    return "profile"


def query_embedding(
    run: Any,
    query: GeneQuery,
    *,
    level_sd: float = LEVEL_SD,
    contrast: bool = True,
    omics_query: str = "auto",
) -> np.ndarray:
    """The omics embedding ``(D,)`` of a query (route ``omics``).

    ``omics_query="exemplar"`` (what ``"auto"`` picks when the run has a reference
    bank): the mean omics embedding of the training spots highest in the query
    (:func:`~napari_seal.retrieval.exemplar.exemplar_embedding`). ``"profile"`` (runs
    without a bank): the embedding of a synthetic profile, every gene at its training
    mean and the query genes ``level_sd`` SDs up.

    With ``contrast=True`` (default) the embedding of typical tissue (all bank spots,
    or the all-mean profile) is subtracted, keeping the direction the query adds.
    Without it the cosine is dominated by the part every query shares: on her2st the
    score maps of different single-gene queries correlate at 0.99 (``docs/queries.md``).
    """
    require_route(run, "omics")
    omics_query = resolve_omics_query(run, omics_query)
    if omics_query == "exemplar":
        if not has_bank(run):
            msg = (
                f"the run {_run_label(run)} has no reference bank (reference.npz) "
                "for exemplar queries; retrain it with `napari-seal train`"
            )
            raise GeneQueryError(msg)
        return exemplar_embedding(run, query, contrast=contrast)
    z = query_expression(run, query, level_sd=level_sd)
    emb = encode_expression(run, omics_input(run, z)[None])[0]
    if not contrast:
        return emb
    return emb - mean_profile_embedding(run)


_MEAN_EMB: weakref.WeakKeyDictionary[Any, tuple[bytes, np.ndarray]] = (
    weakref.WeakKeyDictionary()
)


def mean_profile_embedding(run: Any) -> np.ndarray:
    """Omics embedding ``(D,)`` of the all-mean profile (cached per omics module)."""
    x = omics_input(run, np.zeros(len(run.panel.genes), np.float32))
    key = x.tobytes()
    hit = _MEAN_EMB.get(run.omics)
    if hit is not None and hit[0] == key:
        return hit[1]
    emb = encode_expression(run, x[None])[0]
    _MEAN_EMB[run.omics] = (key, emb)
    return emb


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _decoder_weights(run: Any, query: GeneQuery) -> tuple[np.ndarray, np.ndarray]:
    pos = {g: i for i, g in enumerate(run.panel.genes)}
    idx = np.asarray([pos[g] for g in query.genes], dtype=np.int64)
    w = np.asarray(query.weights, dtype=np.float32)
    return idx, w / np.abs(w).sum()


def _decoder_score(run: Any, pred: np.ndarray, query: GeneQuery) -> np.ndarray:
    """Weight-averaged z-scores of predicted expression ``pred`` (n, len(query))."""
    idx, w = _decoder_weights(run, query)
    z = (pred - run.panel.mean[idx]) / run.panel.std[idx]
    return (z @ w).astype(np.float32)


def score_embeddings(
    run: Any,
    embeddings: np.ndarray,
    query: GeneQuery,
    *,
    route: str = DEFAULT_ROUTE,
    level_sd: float = LEVEL_SD,
    contrast: bool = True,
    omics_query: str = "auto",
) -> np.ndarray:
    """Score image embeddings ``(n, D)`` (tiles or spot patches) for a query.

    Returns
    -------
    ``(n,)`` float32: cosine similarity (``omics``) or mean predicted z-score
    (``decoder``).
    """
    require_route(run, route)
    emb = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    if route == "omics":
        q = query_embedding(
            run, query, level_sd=level_sd, contrast=contrast, omics_query=omics_query
        )
        _check_dim(emb.shape[1], q.size, where="the image embeddings")
        return (_unit(emb) @ _unit(q)).astype(np.float32)
    head = _head(run)
    idx, _ = _decoder_weights(run, query)
    return _decoder_score(run, head.output(head.hidden(emb), idx), query)


def _check_dim(d_img: int, d_omics: int, *, where: str) -> None:
    if d_img != d_omics:
        msg = (
            f"{where} have {d_img} dimensions but the run's omics embedding has "
            f"{d_omics}; embed with the run's own encoder (--run RUN_DIR)"
        )
        raise EncoderMismatchError(msg)


_HEADS: dict[int, tuple[Any, Any]] = {}


def _head(run: Any) -> Any:
    """The run's decoder as a cached
    :class:`~napari_seal.predict.expression.ExpressionHead`."""
    from napari_seal.predict.expression import expression_head

    key = id(run.decoder)
    hit = _HEADS.get(key)
    if hit is not None and hit[0] is run.decoder:
        return hit[1]
    head = expression_head(run)
    if len(_HEADS) > 4:
        _HEADS.clear()
    _HEADS[key] = (run.decoder, head)
    return head


# ---------------------------------------------------------------------------- stores
class UnitEmbeddings:
    """L2-normalised embeddings of one store, held in memory for one-matvec queries.

    Parameters
    ----------
    unit
        ``(n, D)`` torch tensor (float16 by default; NaN rows zeroed).
    valid
        ``(n,)`` bool: the tile was embedded.
    """

    def __init__(self, unit: Any, valid: np.ndarray) -> None:
        self.unit = unit
        self.valid = valid

    @classmethod
    def from_array(
        cls, embeddings: np.ndarray, *, dtype: str = "float16", block: int = 16384
    ) -> UnitEmbeddings:
        """Normalise ``(n, D)`` embeddings block by block."""
        import torch

        emb = embeddings
        n = int(emb.shape[0])
        tdtype = getattr(torch, dtype)
        out = torch.empty((n, int(emb.shape[1])), dtype=tdtype)
        valid = np.ones(n, dtype=bool)
        for i in range(0, n, block):
            e = np.asarray(emb[i : i + block], dtype=np.float32)
            ok = np.isfinite(e).all(axis=1)
            e = np.where(ok[:, None], e, 0.0)
            valid[i : i + len(e)] = ok
            out[i : i + len(e)] = torch.from_numpy(_unit(e)).to(tdtype)
        return cls(out, valid)

    def cosine(self, q: np.ndarray) -> np.ndarray:
        """Cosine similarity of every row with ``q`` ``(D,)``; NaN where invalid."""
        import torch

        qt = torch.from_numpy(_unit(q).astype(np.float32)).to(self.unit.dtype)
        s = torch.mv(self.unit, qt).float().numpy()
        return np.where(self.valid, s, np.nan).astype(np.float32)


_UNIT_CACHE: OrderedDict[tuple, UnitEmbeddings] = OrderedDict()
_UNIT_CACHE_SIZE = 2


_BY_OBJECT: dict[int, tuple[Any, UnitEmbeddings]] = {}


def unit_embeddings(store: Any, *, dtype: str = "float16") -> UnitEmbeddings:
    """The cached :class:`UnitEmbeddings` of a store (computed on first use).

    Cached per open store object (no disk access on a hit) and per store path (file
    stamps), for complete stores only: a store still being embedded is re-read.
    """
    hit = _BY_OBJECT.get(id(store))
    if (
        hit is not None
        and hit[0]() is store
        and hit[1].unit.dtype == _torch_dtype(dtype)
    ):
        return hit[1]
    complete = bool(store.complete)
    key = (*store.cache_key, dtype)
    if complete and key in _UNIT_CACHE:
        _UNIT_CACHE.move_to_end(key)
        unit = _UNIT_CACHE[key]
    else:
        unit = UnitEmbeddings.from_array(store.group["embeddings"], dtype=dtype)
        unit.valid &= store.tile_done
    if complete:
        _UNIT_CACHE[key] = unit
        while len(_UNIT_CACHE) > _UNIT_CACHE_SIZE:
            _UNIT_CACHE.popitem(last=False)
        for k in [k for k, (ref, _) in _BY_OBJECT.items() if ref() is None]:
            del _BY_OBJECT[k]
        _BY_OBJECT[id(store)] = (weakref.ref(store), unit)
    return unit


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def _open_store(store: Any) -> Any:
    from napari_seal.predict.expression import EmbeddingStore, open_store

    return store if isinstance(store, EmbeddingStore) else open_store(store)


def check_store_run(store: Any, run: Any) -> None:
    """Refuse a store that was not embedded with the run's own encoder.

    Raises
    ------
    EncoderMismatchError
        Naming the store's encoder and what to do.
    """
    enc = dict(store.signature.get("encoder", {}))
    source = str(enc.get("source", ""))
    d_run = getattr(getattr(run, "encoder", None), "embed_dim", None)
    if d_run is not None and int(store.embed_dim) != int(d_run):
        _check_dim(int(store.embed_dim), int(d_run), where=f"the store {store.path}")
    path = getattr(run, "path", None)
    if path is None:
        return
    want = f"run:{Path(path).resolve()}"
    if source == want:
        return
    if source.startswith("run:") and enc.get("adapter_sha256") is not None:
        from napari_seal.training.runs import adapter_hash

        if enc.get("adapter_sha256") == adapter_hash(path):
            return
    msg = (
        f"the embedding store {store.path} was made with {source or 'another encoder'}"
        f", not with the run {Path(path).resolve()}; a gene query needs the run's "
        f"own image embeddings: embed with `napari-seal embed SLIDE --run {path} "
        "--out STORE.zarr`, or omit --store to embed automatically"
    )
    raise EncoderMismatchError(msg)


def score_store(
    store: Any,
    run: Any,
    query: GeneQuery,
    *,
    route: str = DEFAULT_ROUTE,
    level_sd: float = LEVEL_SD,
    contrast: bool = True,
    check: bool = True,
    omics_query: str = "auto",
) -> np.ndarray:
    """Score every tile of a store: ``(n_tiles,)`` float32, NaN where unfinished.

    Parameters
    ----------
    store
        An open :class:`~napari_seal.predict.expression.EmbeddingStore` (keep it
        between queries: it caches the decoder's hidden layer) or its path.
    run, query, route, level_sd, contrast
        As in :func:`score_embeddings`.
    omics_query
        As in :func:`query_embedding`.
    check
        Refuse a store not embedded with the run's encoder (:func:`check_store_run`).
    """
    store = _open_store(store)
    require_route(run, route)
    if check:
        check_store_run(store, run)
    if route == "omics":
        q = query_embedding(
            run, query, level_sd=level_sd, contrast=contrast, omics_query=omics_query
        )
        _check_dim(int(store.embed_dim), q.size, where=f"the store {store.path}")
        return unit_embeddings(store).cosine(q)
    head = _head(run)
    idx, _ = _decoder_weights(run, query)
    scores = _decoder_score(run, head.output(store.hidden(head), idx), query)
    return np.where(store.tile_done, scores, np.nan).astype(np.float32)
