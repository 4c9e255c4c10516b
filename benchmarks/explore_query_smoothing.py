"""Does smoothing a query's score map over nearby tissue help? her2st LOSO (issue 15).

A gene's expression is spatially coherent (a tumour region expresses ERBB2 as a
whole), and one tile's image score is noisy. For the SEAL runs of a
``bench_gene_query_her2st.py`` workdir this scores each held-out section's spots with
the default ``omics`` (exemplar) route and the ``decoder`` route, then replaces each
spot's score by a Gaussian-weighted mean over the spots within ``3 sigma`` of it
(``sigma`` in micrometres, ``--sigmas``; 0 = no smoothing; the weights use only the
spots' positions on the image, never their measured expression). It prints the mean
AUROC over the 50 most variable panel genes per fold, plus ERBB2 and GRB7 (that
benchmark's protocol and labels, its feature cache: seconds per fold). A sigma chosen
here is chosen on all five folds at once: read the per-fold rows, not only the mean.

Usage::

    python benchmarks/explore_query_smoothing.py --workdir /tmp/gq-WORKDIR \
        [--sigmas 0 100 150 200 300] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

SECTIONS = ("C2", "C3", "C4", "C5", "C6")


def smoothing_matrix(xy_um: np.ndarray, sigma_um: float) -> np.ndarray:
    """Row-normalised Gaussian weights between points, cut at 3 sigma."""
    n = len(xy_um)
    if sigma_um <= 0:
        return np.eye(n)
    d2 = ((xy_um[:, None, :] - xy_um[None, :, :]) ** 2).sum(-1)
    w = np.exp(-d2 / (2 * sigma_um**2))
    w[d2 > (3 * sigma_um) ** 2] = 0.0
    return w / w.sum(axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--sigmas", type=float, nargs="+",
                    default=[0.0, 100.0, 150.0, 200.0, 300.0])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from explore_route_ensemble import fold_row, held_out_folds, report

    import napari_seal.evaluate.retrieval_metrics as ev

    methods = [f"{r} s={s:g}" for r in ("exemplar", "decoder") for s in args.sigmas]
    rows: dict[str, dict] = {}
    for fold in held_out_folds(args.workdir):
        held, run, sample, emb = fold.held, fold.run, fold.sample, fold.embeddings
        genes = list(run.panel.genes)
        raw = {
            "exemplar": ev.gene_score_matrix(run, emb, genes, route="omics",
                                             omics_query="exemplar"),
            "decoder": ev.gene_score_matrix(run, emb, genes, route="decoder"),
        }
        xy_um = np.asarray(sample.spots_xy, dtype=np.float64) * float(sample.mpp)
        scores = {}
        for s in args.sigmas:
            w = smoothing_matrix(xy_um, s)
            for r, m in raw.items():
                scores[f"{r} s={s:g}"] = w @ np.asarray(m, dtype=np.float64)
        rep = ev.evaluate_gene_queries(
            run, sample, embeddings=emb, routes=(),
            baselines={m: (scores[m], genes) for m in methods},
        )
        rows[held] = fold_row(held, rep, methods)
    return report(rows, methods, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
