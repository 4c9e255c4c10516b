"""Does the reliability map rank the errors? Evaluation on a held-out ST sample.

For each gene (the panel genes most variable in the held-out sample, plus markers) the
SEAL decoder predicts every spot's expression from its spot-centred patch; the error
is ``|prediction - measured|`` in z units of the training spots, measured being the
run's own target (panel-space smoothed log1p CP10k, ``GenePanel.expression``), spots
without counts left out. The label is "the error is above the gene's median"; each
uncertainty estimate of :mod:`napari_seal.predict.reliability` is scored by the
AUROC of ranking those spots first (0.5 = no better than chance). Two baselines say
how much is trivial: ``predicted magnitude`` (``|predicted z|``: errors grow with it)
and spot depth (``log1p`` total counts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_seal.evaluate.retrieval_metrics import (
    MARKERS,
    auroc,
    measured_log1p_cp10k,
    summarise_aurocs,
    variable_genes,
)

__all__ = ["RELIABILITY_METHODS", "evaluate_reliability"]

#: what :func:`evaluate_reliability` reports: the estimates, then the baselines
RELIABILITY_METHODS = (
    "spread",
    "disagreement",
    "spread+disagreement",
    "expected-error",
    "novelty",
    "predicted magnitude",
    "depth",
)


def evaluate_reliability(
    run: Any,
    sample: Any,
    *,
    embeddings: np.ndarray,
    n_genes: int = 50,
    markers: Sequence[str] = MARKERS,
    k: int | None = None,
) -> dict[str, Any]:
    """AUROC of each uncertainty estimate for "the spot's error is above the median".

    Parameters
    ----------
    run
        A SEAL run with a decoder and a reference bank.
    sample
        The held-out ST sample (not among the run's training samples).
    embeddings
        ``(n_spots, D)`` the run's image embeddings of the sample's spot patches.
    n_genes, markers
        Genes evaluated, as in :func:`~napari_seal.evaluate.retrieval_metrics.
        evaluate_gene_queries`.
    k
        Neighbours per spot (default :data:`~napari_seal.predict.reliability.
        K_NEIGHBOURS`).

    Returns
    -------
    dict
        ``genes``, ``n_spots`` and, per method (``spread``, ``disagreement``,
        ``expected-error``, ``novelty``, ``spread+disagreement``, baselines
        ``predicted magnitude`` and ``depth``), the mean AUROC, markers and per-gene
        values; ``median_error`` per gene (z units).
    """
    import napari_seal.predict.reliability as rel
    from napari_seal.predict.expression import expression_head

    names, expr, depth = measured_log1p_cp10k(sample)
    genes = variable_genes(names, expr, run.panel.genes, n=n_genes)
    panel_pos = {g: i for i, g in enumerate(run.panel.genes)}
    genes += [g for g in markers if g in panel_pos and g not in genes]
    idx = np.asarray([panel_pos[g] for g in genes], dtype=np.int64)
    measured = np.asarray(run.panel.expression(sample), dtype=np.float32)
    keep = measured.sum(axis=1) > 0
    meas_z = run.panel.zscore(measured)[:, idx][keep]
    emb = np.asarray(embeddings, dtype=np.float32)[keep]
    head = expression_head(run)
    pred = head.output(head.hidden(emb), head.index(genes))
    pred_z = (pred - run.panel.mean[idx]) / run.panel.std[idx]
    err = np.abs(pred_z - meas_z)
    labels = err > np.median(err, axis=0, keepdims=True)
    nbrs = rel.neighbours(run, emb, k=k or rel.K_NEIGHBOURS)
    novelty = rel.uncertainty(run, nbrs, genes[0], method="novelty")
    scores: dict[str, dict[str, float]] = {m: {} for m in RELIABILITY_METHODS}
    for j, g in enumerate(genes):
        spread = rel.uncertainty(run, nbrs, g, method="spread")
        dis = rel.uncertainty(
            run, nbrs, g, method="disagreement", predicted_z=pred_z[:, j]
        )
        y = labels[:, j]
        scores["spread"][g] = auroc(spread, y)
        scores["disagreement"][g] = auroc(dis, y)
        scores["spread+disagreement"][g] = auroc(spread + dis, y)
        exp_err = rel.uncertainty(
            run, nbrs, g, method="expected-error", predicted_z=pred_z[:, j]
        )
        scores["expected-error"][g] = auroc(exp_err, y)
        scores["novelty"][g] = auroc(novelty, y)
        scores["predicted magnitude"][g] = auroc(np.abs(pred_z[:, j]), y)
        scores["depth"][g] = auroc(np.asarray(depth)[keep], y)
    return {
        "sample": str(sample.name),
        "n_spots": int(keep.sum()),
        "genes": genes,
        "k": int(nbrs.index.shape[1]),
        "median_error": {g: float(np.median(err[:, j])) for j, g in enumerate(genes)},
        "methods": {m: summarise_aurocs(v, markers) for m, v in scores.items()},
    }
