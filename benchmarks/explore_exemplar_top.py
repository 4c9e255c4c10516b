"""How many exemplars should a gene query use? her2st leave one section out (issue 15).

The default omics route's query vector is the mean omics embedding of the bank spots
in the top quartile of the query (``napari_seal.retrieval.exemplar.DEFAULT_TOP``),
minus the mean of all bank spots. For the SEAL runs of a
``bench_gene_query_her2st.py`` workdir, this scores each held-out section's spots with

- ``top=F`` for each ``--tops`` fraction (the default 0.25 among them);
- ``weighted``: every bank spot weighted by its centred query score,
  ``sum_i (s_i - mean s) e_i`` (the covariance of the score with the embedding: no
  cut-off at all);
- ``weighted+``: only the spots above the mean score, weighted by how far above;

and prints the mean AUROC over the 50 most variable panel genes per fold, plus ERBB2
and GRB7 (that benchmark's protocol and labels; its feature cache, so seconds per fold).
A knob chosen here is chosen on all five folds at once: read the per-fold rows, not only
the mean.

Usage::

    python benchmarks/explore_exemplar_top.py --workdir /tmp/gq-WORKDIR [--json OUT] \
        [--tops 0.05 0.1 0.25 0.5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

SECTIONS = ("C2", "C3", "C4", "C5", "C6")


def _unit(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-12)


def query_vectors(run, genes: list[str], tops: list[float]) -> dict[str, np.ndarray]:
    """``{method: (n_genes, D)}`` query vectors of every single-gene query."""
    from napari_seal.retrieval.exemplar import exemplar_embedding
    from napari_seal.retrieval.gene_signatures import GeneQuery
    from napari_seal.training.reference_bank import bank_embeddings, bank_zscores

    out = {
        f"top={t:g}": np.stack([
            exemplar_embedding(run, GeneQuery((g,), (1.0,), (g,)), top=t)
            for g in genes
        ])
        for t in tops
    }
    emb = bank_embeddings(run).astype(np.float64)
    pos = {g: i for i, g in enumerate(run.panel.genes)}
    z = bank_zscores(run)[:, [pos[g] for g in genes]].astype(np.float64)
    centred = z - z.mean(axis=0)
    out["weighted"] = centred.T @ emb
    out["weighted+"] = np.clip(centred, 0, None).T @ (emb - emb.mean(axis=0))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--tops", type=float, nargs="+", default=[0.05, 0.1, 0.25, 0.5])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from explore_route_ensemble import fold_row, held_out_folds, report

    import napari_seal.evaluate.retrieval_metrics as ev

    rows: dict[str, dict] = {}
    methods: list[str] = []
    for fold in held_out_folds(args.workdir):
        held, run, emb = fold.held, fold.run, fold.embeddings
        genes = list(run.panel.genes)
        vectors = query_vectors(run, genes, args.tops)
        methods = list(vectors)
        tiles = _unit(emb)
        rep = ev.evaluate_gene_queries(
            run, fold.sample, embeddings=emb, routes=(),
            baselines={m: (tiles @ _unit(q).T, genes) for m, q in vectors.items()},
        )
        rows[held] = fold_row(held, rep, methods)
    return report(rows, methods, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
