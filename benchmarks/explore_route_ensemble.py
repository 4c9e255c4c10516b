"""Do the two gene-query routes add up? her2st leave one section out (issue 15).

For the SEAL runs of a ``bench_gene_query_her2st.py`` workdir (trained there, or by a
``--set`` recipe search there), scores each held-out section's spots with

- ``omics-exemplar`` (the default route) and ``decoder``, as in that benchmark;
- ``ensemble``: per gene, the mean of the two routes' scores after standardising each
  over the held-out section's spots (a rank-free z-score: AUROC only sees the order);
- ``ensemble-rank``: the same with each route's scores replaced by their ranks;
- with ``--seed-workdir W`` (the same benchmark trained with another ``--set seed=N``):
  ``exemplar, 2 seeds`` / ``decoder, 2 seeds``, the route's standardised scores
  averaged over the two runs of the fold (an ensemble of LoRA seeds, at twice the
  training and embedding cost), and ``exemplar (seed W)``, the second run alone;

and prints the mean AUROC over the 50 most variable panel genes per fold, plus ERBB2
and GRB7 (the protocol and labels of ``bench_gene_query_her2st.py``). Uses that
benchmark's feature cache, so it costs seconds per fold after it ran.

Usage::

    python benchmarks/explore_route_ensemble.py --workdir /tmp/gq-WORKDIR [--json OUT] \
        [--seed-workdir /tmp/gq-SEED1]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

SECTIONS = ("C2", "C3", "C4", "C5", "C6")


class Fold(NamedTuple):
    """One held-out section of a ``bench_gene_query_her2st.py`` workdir."""

    held: str
    run: Any
    sample: Any
    embeddings: np.ndarray  # (n_spots, D) the run's embeddings of the held-out spots
    names: dict[str, str]  # section -> sample name (for ``find_run`` elsewhere)


def held_out_folds(workdir: Path) -> Iterator[Fold]:
    """Each section of ``workdir`` with its own SEAL run (sections without one are
    reported and skipped); the workdir's cache is the workspace."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("NAPARI_SEAL_CACHE", str(workdir / "cache"))
    from bench_gene_query_her2st import features, find_run, seal_tag, section_dirs

    from napari_seal.io.hest import load_sample
    from napari_seal.training.runs import load_run

    dirs = section_dirs(workdir, list(SECTIONS))
    samples = {s: load_sample(d) for s, d in dirs.items()}
    names = {s: samples[s].name for s in samples}
    for held in SECTIONS:
        run_dir = find_run(held, names, workdir, own_only=True)
        if run_dir is None:
            print(f"{held}: no run in {workdir}")
            continue
        run = load_run(run_dir)
        emb = features(workdir / "features", seal_tag(run_dir), samples[held],
                       run.encoder)
        yield Fold(held, run, samples[held], emb, names)


def _standardise(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    sd = m.std(axis=0)
    return (m - m.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def _ranks(m: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(np.asarray(m, dtype=np.float64), axis=0)


def fold_row(held: str, rep: dict, methods) -> dict:
    """One fold's mean AUROC plus ERBB2 and GRB7 per method (printed as a line)."""
    got = rep["methods"]
    row = {
        m: {"mean": got[m]["mean"], **{g: got[m]["markers"].get(g)
                                       for g in ("ERBB2", "GRB7")}}
        for m in methods
    }
    print(held, "  ".join(f"{m} {row[m]['mean']:.3f}" for m in methods), flush=True)
    return row


def report(rows: dict, methods, json_path: Path | None) -> int:
    """Print the per-fold table and the means; write ``json_path``; exit status."""
    if not rows:
        return 1
    print("\nmethod | " + " | ".join(rows) + " | mean | ERBB2 | GRB7")
    summary = {}
    for m in methods:
        per = [rows[h][m]["mean"] for h in rows]
        erbb2 = float(np.mean([rows[h][m]["ERBB2"] for h in rows]))
        grb7 = float(np.mean([rows[h][m]["GRB7"] for h in rows]))
        summary[m] = {"mean": float(np.mean(per)), "ERBB2": erbb2, "GRB7": grb7}
        print(f"{m} | " + " | ".join(f"{v:.3f}" for v in per)
              + f" | {np.mean(per):.3f} | {erbb2:.3f} | {grb7:.3f}")
    if json_path:
        json_path.write_text(json.dumps({"folds": rows, "summary": summary},
                                        indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seed-workdir", type=Path, default=None,
                    help="a workdir trained with another --set seed=N")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_gene_query_her2st import features, find_run, seal_tag

    import napari_seal.evaluate.retrieval_metrics as ev
    from napari_seal.training.runs import load_run

    methods = ("omics-exemplar", "decoder", "ensemble", "ensemble-rank")
    if args.seed_workdir:
        methods += ("exemplar (seed W)", "exemplar, 2 seeds", "decoder, 2 seeds")
    rows = {}
    for fold in held_out_folds(args.workdir):
        held, run, emb = fold.held, fold.run, fold.embeddings
        genes = list(run.panel.genes)
        ex = ev.gene_score_matrix(run, emb, genes, route="omics",
                                  omics_query="exemplar")
        dec = ev.gene_score_matrix(run, emb, genes, route="decoder")
        scores = {
            "omics-exemplar": ex,
            "decoder": dec,
            "ensemble": (_standardise(ex) + _standardise(dec)) / 2,
            "ensemble-rank": (_ranks(ex) + _ranks(dec)) / 2,
        }
        if args.seed_workdir:
            rd2 = find_run(held, fold.names, args.seed_workdir, own_only=True)
            if rd2 is None:
                print(f"{held}: no run in {args.seed_workdir}")
                continue
            run2 = load_run(rd2)
            if list(run2.panel.genes) != genes:
                msg = f"{held}: the two runs' panels differ"
                raise SystemExit(msg)
            emb2 = features(args.seed_workdir / "features", seal_tag(rd2),
                            fold.sample, run2.encoder)
            ex2 = ev.gene_score_matrix(run2, emb2, genes, route="omics",
                                       omics_query="exemplar")
            dec2 = ev.gene_score_matrix(run2, emb2, genes, route="decoder")
            scores["exemplar (seed W)"] = ex2
            scores["exemplar, 2 seeds"] = (_standardise(ex) + _standardise(ex2)) / 2
            scores["decoder, 2 seeds"] = (_standardise(dec) + _standardise(dec2)) / 2
        rep = ev.evaluate_gene_queries(
            run, fold.sample, embeddings=emb, routes=(),
            baselines={m: (scores[m], genes) for m in methods},
        )
        rows[held] = fold_row(held, rep, methods)
    return report(rows, methods, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
