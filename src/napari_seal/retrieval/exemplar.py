"""Exemplar query vectors: gene queries answered with the run's own training spots.

The omics route compares image embeddings with an omics embedding of the query. The
first version embedded a synthetic profile (every gene at its training mean, the query
genes ``LEVEL_SD`` standard deviations up), a point the omics encoder never saw in
training; on held-out sections it ranked tissue barely above chance
(``docs/queries.md``). An *exemplar* query instead takes the training spots of the
run's reference bank (:mod:`napari_seal.training.reference_bank`) that are high in the
query, i.e. the top ``top`` fraction by the query score ``sum_g w_g z_g`` of their
measured z-scored expression, and uses the mean of their (unit) omics embeddings
minus the mean over all bank spots: the direction in SEAL's shared space from typical
tissue to tissue that expresses the query, measured rather than imagined.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from napari_seal.training.reference_bank import MIN_BANK, bank_embeddings, has_bank

__all__ = [
    "DEFAULT_TOP",
    "MIN_BANK",
    "bank_embeddings",
    "exemplar_embedding",
    "exemplar_spots",
    "has_bank",
]

#: fraction of the bank spots taken as exemplars (the label's top quartile)
DEFAULT_TOP = 0.25


def exemplar_spots(run: Any, query: Any, *, top: float = DEFAULT_TOP) -> np.ndarray:
    """Indices of the bank spots highest in the query (at least one).

    The query score of a spot is the weight-averaged z-score of its measured
    expression over the query genes (negative weights count against).
    """
    pos = {g: i for i, g in enumerate(run.panel.genes)}
    idx = np.asarray([pos[g] for g in query.genes], dtype=np.int64)
    w = np.asarray(query.weights, dtype=np.float32)
    w = w / max(float(np.abs(w).sum()), 1e-12)
    z = run.panel.zscore(run.bank.expr)[:, idx]
    score = np.asarray(z @ w, dtype=np.float64)
    k = max(1, math.ceil(float(top) * len(score)))
    cut = np.partition(score, len(score) - k)[len(score) - k]
    above = np.flatnonzero(score > cut)
    if above.size == 0:  # the top is one tied value: take it all
        above = np.flatnonzero(score >= cut)
    return above


def exemplar_embedding(
    run: Any, query: Any, *, top: float = DEFAULT_TOP, contrast: bool = True
) -> np.ndarray:
    """The exemplar query vector ``(D,)`` (see the module docstring).

    ``contrast=False`` keeps the exemplars' mean embedding without subtracting the
    mean of all bank spots.
    """
    emb = bank_embeddings(run)
    q = emb[exemplar_spots(run, query, top=top)].mean(axis=0)
    if contrast:
        q = q - emb.mean(axis=0)
    return q.astype(np.float32)
