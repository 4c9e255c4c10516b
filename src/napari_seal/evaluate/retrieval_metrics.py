"""Evaluation of gene queries on a held-out ST sample.

Gene -> image (per gene): the query score at each spot (on its spot-centred patch)
against the label "the spot is in the top quartile of the gene's measured
depth-normalised expression" (raw counts normalised to 1e4 per spot, ``log1p``,
unsmoothed; label = strictly above the 75th percentile), as AUROC. Depth-normalised
labels matter: with raw counts, spot depth alone ranks ERBB2-high her2st spots at
AUROC ~0.96, so a raw label proves nothing. Each report carries the same AUROC for
spot depth (``log1p`` total counts) as the bar to clear. Genes: the panel genes most
variable (variance of log1p CP10k) in the held-out sample, plus named markers.

Image -> expression: Recall@k. Each spot's image is the query; the candidates are
every spot's measured expression in the same sample; a hit is the true spot among the
k most similar, by cosine with the omics embeddings (``omics``) or by Pearson
correlation between predicted and measured expression (``decoder``, or any
predictor such as a ridge probe on frozen features). Chance is ``k / n_spots``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError

__all__ = [
    "MARKERS",
    "auroc",
    "correlation_matrix",
    "evaluate_gene_queries",
    "evaluate_image_to_expression",
    "gene_score_matrix",
    "measured_log1p_cp10k",
    "query_aurocs",
    "recall_at_k",
    "summarise_aurocs",
    "top_quartile_labels",
    "variable_genes",
]

#: marker genes always reported when the panel and the sample have them
MARKERS = ("ERBB2", "GRB7", "KRT19", "CD74")


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties).

    Non-finite scores are dropped. Returns NaN when only one class remains.

    Examples
    --------
    >>> auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        msg = f"{s.size} scores for {y.size} labels; they must pair up"
        raise BadInputError(msg)
    ok = np.isfinite(s)
    s, y = s[ok], y[ok]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def top_quartile_labels(expr: np.ndarray, *, quantile: float = 0.75) -> np.ndarray:
    """``expr > quantile(expr, 0.75)`` per column (a spot in the top quartile)."""
    x = np.asarray(expr, dtype=np.float64)
    cut = np.quantile(x, quantile, axis=0)
    return x > cut


def measured_log1p_cp10k(sample: Any) -> tuple[list[str], Any, np.ndarray]:
    """Measured depth-normalised expression of a sample.

    Returns
    -------
    genes : list of str
        Upper-case gene names.
    expr : scipy.sparse.csr_matrix
        ``(n_spots, n_genes)`` log1p CP10k.
    depth : numpy.ndarray
        ``(n_spots,)`` ``log1p`` of the spot's total raw count.
    """
    from napari_seal.predict.probe import depth_feature, make_targets, raw_counts

    counts = raw_counts(sample.adata)
    genes = [str(g).upper() for g in sample.adata.var_names]
    return genes, make_targets(counts, mode="normalized"), depth_feature(counts).ravel()


def variable_genes(
    genes: Sequence[str], expr: Any, panel: Sequence[str], *, n: int = 50
) -> list[str]:
    """The ``n`` panel genes most variable in ``expr`` (constant ones skipped)."""
    pos = {g: i for i, g in enumerate(genes)}
    cand = [g for g in dict.fromkeys(str(p).upper() for p in panel) if g in pos]
    if not cand:
        msg = "the sample shares no gene with the run's panel; check its gene names"
        raise BadInputError(msg)
    sub = expr[:, [pos[g] for g in cand]]
    sub = sub.toarray() if hasattr(sub, "toarray") else np.asarray(sub)
    var = sub.var(axis=0)
    order = [i for i in np.argsort(-var, kind="stable") if var[i] > 0][:n]
    return [cand[i] for i in order]


def gene_score_matrix(
    run: Any,
    embeddings: np.ndarray,
    genes: Sequence[str],
    *,
    route: str = "omics",
    level_sd: float | None = None,
    contrast: bool = True,
    omics_query: str = "auto",
) -> np.ndarray:
    """Single-gene query scores ``(n_spots, len(genes))`` for every gene at once.

    ``omics_query`` as in :func:`napari_seal.retrieval.scoring.query_embedding`
    (``auto``: exemplar queries when the run has a reference bank).
    """
    import napari_seal.retrieval.scoring as sc
    from napari_seal.retrieval.exemplar import exemplar_embedding
    from napari_seal.retrieval.gene_signatures import GeneQuery

    sc.require_route(run, route)
    emb = np.asarray(embeddings, dtype=np.float32)
    pos = {g: i for i, g in enumerate(run.panel.genes)}
    idx = np.asarray([pos[g] for g in genes], dtype=np.int64)
    if route == "omics":
        if sc.resolve_omics_query(run, omics_query) == "exemplar":
            q = np.stack(
                [
                    exemplar_embedding(
                        run, GeneQuery((g,), (1.0,), (g,)), contrast=contrast
                    )
                    for g in genes
                ]
            )
            return sc._unit(emb) @ sc._unit(q).T
        level = sc.LEVEL_SD if level_sd is None else float(level_sd)
        z = np.zeros((len(genes), len(run.panel.genes)), dtype=np.float32)
        z[np.arange(len(genes)), idx] = level
        q = sc.encode_expression(run, sc.omics_input(run, z))
        if contrast:
            q = q - sc.mean_profile_embedding(run)
        return sc._unit(emb) @ sc._unit(q).T
    head = sc._head(run)
    pred = head.output(head.hidden(emb), idx)
    return (pred - run.panel.mean[idx]) / run.panel.std[idx]


def query_aurocs(
    scores: np.ndarray,
    labels: np.ndarray,
    genes: Sequence[str],
    *,
    markers: Sequence[str] = MARKERS,
) -> dict[str, Any]:
    """Per-gene AUROC of score columns against label columns, with summaries."""
    per_gene = {g: auroc(scores[:, j], labels[:, j]) for j, g in enumerate(genes)}
    return summarise_aurocs(per_gene, markers)


def summarise_aurocs(
    per_gene: dict[str, float], markers: Sequence[str] = MARKERS
) -> dict[str, Any]:
    """Mean over genes (finite values), markers and per-gene values."""
    vals = np.array([v for v in per_gene.values() if np.isfinite(v)])
    return {
        "mean": float(vals.mean()) if vals.size else float("nan"),
        "markers": {g: per_gene[g] for g in markers if g in per_gene},
        "per_gene": per_gene,
    }


def evaluate_gene_queries(
    run: Any,
    sample: Any,
    *,
    embeddings: np.ndarray,
    n_genes: int = 50,
    markers: Sequence[str] = MARKERS,
    routes: Sequence[str] = ("omics", "decoder"),
    baselines: Mapping[str, tuple[np.ndarray, Sequence[str]]] | None = None,
) -> dict[str, Any]:
    """Gene -> image AUROC on a held-out sample, for each route and baseline.

    Parameters
    ----------
    run
        The SEAL run (its panel chooses the candidate genes).
    sample
        The held-out ST sample.
    embeddings
        ``(n_spots, D)`` the run's image embeddings of the sample's spot patches.
    n_genes
        Most variable panel genes evaluated (plus ``markers`` present).
    routes
        Query routes to evaluate.
    baselines
        ``name -> (predictions (n_spots, G_b), gene names)``: other per-spot scores
        (e.g. a ridge probe on frozen features); genes they lack are skipped for them.

    Returns
    -------
    dict
        ``genes``, ``n_spots``, per method (routes, baselines, ``depth``) the mean
        AUROC, markers and per-gene values, and ``positives`` per gene.
    """
    names, expr, depth = measured_log1p_cp10k(sample)
    genes = variable_genes(names, expr, run.panel.genes, n=n_genes)
    pos = {g: i for i, g in enumerate(names)}
    panel = set(run.panel.genes)
    genes += [g for g in markers if g in pos and g in panel and g not in genes]
    cols = expr[:, [pos[g] for g in genes]]
    labels = top_quartile_labels(cols.toarray() if hasattr(cols, "toarray") else cols)
    out: dict[str, Any] = {
        "sample": str(sample.name),
        "n_spots": int(len(depth)),
        "genes": genes,
        "positives": {g: int(labels[:, j].sum()) for j, g in enumerate(genes)},
    }
    methods: dict[str, Any] = {}
    for route in routes:
        s = gene_score_matrix(run, embeddings, genes, route=route)
        methods[route] = query_aurocs(s, labels, genes, markers=markers)
    for name, (pred, pred_genes) in (baselines or {}).items():
        bpos = {str(g).upper(): i for i, g in enumerate(pred_genes)}
        keep = [j for j, g in enumerate(genes) if g in bpos]
        s = np.asarray(pred)[:, [bpos[genes[j]] for j in keep]]
        methods[name] = query_aurocs(
            s, labels[:, keep], [genes[j] for j in keep], markers=markers
        )
    methods["depth"] = query_aurocs(
        np.repeat(depth[:, None], len(genes), axis=1), labels, genes, markers=markers
    )
    out["methods"] = methods
    return out


def recall_at_k(
    similarity: np.ndarray,
    *,
    ks: Sequence[int] = (1, 5, 10),
    true_index: np.ndarray | None = None,
) -> dict[str, float]:
    """Fraction of queries whose true candidate ranks among the ``k`` most similar.

    Parameters
    ----------
    similarity
        ``(n_queries, n_candidates)``; higher = more similar.
    ks
        Cut-offs.
    true_index
        ``(n_queries,)`` index of each query's true candidate (default: the diagonal).

    Returns
    -------
    ``{"R@1": ..., "R@5": ..., "chance@1": ...}``; ties count against the query
    (the true candidate's rank is 1 + the number of candidates scoring at least as
    high, excluding itself).
    """
    sim = np.asarray(similarity, dtype=np.float64)
    n_q, n_c = sim.shape
    truth = np.arange(n_q) if true_index is None else np.asarray(true_index)
    true_s = sim[np.arange(n_q), truth]
    rank = (sim >= true_s[:, None]).sum(axis=1)  # includes itself
    out = {}
    for k in ks:
        out[f"R@{k}"] = float(np.mean(rank <= k))
        out[f"chance@{k}"] = float(min(1.0, k / n_c))
    return out


def correlation_matrix(pred: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Pearson r between every predicted row and every measured row ``(n, m)``."""

    def centre(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        x = x - x.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.maximum(norm, 1e-12)

    return centre(pred) @ centre(measured).T


def evaluate_image_to_expression(
    run: Any,
    sample: Any,
    *,
    embeddings: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
    routes: Sequence[str] = ("omics", "decoder"),
    baselines: Mapping[str, tuple[np.ndarray, Sequence[str]]] | None = None,
) -> dict[str, Any]:
    """Recall@k of image -> expression retrieval within a held-out sample.

    ``omics``: cosine between spot image embeddings and the omics embeddings of the
    spots' measured (run-preprocessed) expression. ``decoder`` and baselines:
    Pearson r between predicted and measured (run-preprocessed) expression over the
    panel genes they predict, each gene first standardised over the sample's spots
    (the same for every method, so no method gains from a calibration offset).
    """
    import napari_seal.retrieval.scoring as sc

    emb = np.asarray(embeddings, dtype=np.float32)
    measured = np.asarray(run.panel.expression(sample), dtype=np.float32)
    out: dict[str, Any] = {"sample": str(sample.name), "n_spots": int(len(emb))}
    for route in routes:
        sc.require_route(run, route)
        if route == "omics":
            cand = sc.encode_expression(run, sc.sample_omics_input(run, sample))
            sim = sc._unit(emb) @ sc._unit(cand).T
        else:
            head = sc._head(run)
            pred = head.output(head.hidden(emb), np.arange(len(run.panel.genes)))
            sim = correlation_matrix(_standardise(pred), _standardise(measured))
        out[route] = recall_at_k(sim, ks=ks)
    pos = {g: i for i, g in enumerate(run.panel.genes)}
    for name, (pred, pred_genes) in (baselines or {}).items():
        keep = [
            (j, pos[str(g).upper()])
            for j, g in enumerate(pred_genes)
            if str(g).upper() in pos
        ]
        p = np.asarray(pred, dtype=np.float64)[:, [j for j, _ in keep]]
        m = measured[:, [i for _, i in keep]]
        out[name] = recall_at_k(
            correlation_matrix(_standardise(p), _standardise(m)), ks=ks
        )
    return out


def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-9)
