"""``napari-seal query``: score a gene (or signature) query on every tissue tile.

::

    napari-seal query SLIDE_OR_SAMPLE [--run RUN_DIR] --gene G [--gene G2 ...]
        [--signature FILE] --out SCORES.zarr [--route omics|decoder]
        [--spot-scores SCORES.csv] [--store STORE.zarr] [--top-q Q] [--no-contrast]
        [--omics-query auto|exemplar|profile]

Without --run it uses the SEAL model shipped with the package
(:func:`napari_seal.models.shipped.shipped_run_path`).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from napari_seal.commands._args import add_batch_size, add_common
from napari_seal.errors import BadInputError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``query`` sub-command."""
    p = subparsers.add_parser(
        "query",
        help="gene -> image: score where the tissue matches a gene or signature",
        description="Score every tissue tile of a slide for a gene query with a SEAL "
        "run. Route decoder: the run's predicted expression of the query genes "
        "(weighted mean z-score). Route omics: cosine between each tile's image "
        "embedding and the mean omics embedding of the run's training spots in the "
        "top quartile of the query, minus the mean over all its training spots "
        "(--no-contrast: without; runs without a reference bank embed a synthetic "
        "profile instead). Without --run: the "
        "SEAL model shipped with napari-seal (seal-default-her2st, docs/models.md). "
        "See docs/queries.md.",
    )
    p.add_argument(
        "source",
        metavar="SLIDE_OR_SAMPLE",
        help="a slide image or a HEST sample folder",
    )
    p.add_argument(
        "--run",
        metavar="RUN_DIR",
        help="a SEAL run folder (default: the shipped model, seal-default-her2st)",
    )
    p.add_argument(
        "--gene",
        action="append",
        default=[],
        metavar="G",
        help="a gene, G1,G2, or GENE:WEIGHT; repeat for several "
        "(aliases such as HER2, Ki-67, CD45 are understood)",
    )
    p.add_argument(
        "--signature",
        metavar="FILE",
        help="a file of gene/weight pairs (TSV/CSV, header optional)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="SCORES.zarr",
        help="where to write the scores (zarr group)",
    )
    from napari_seal.retrieval.scoring import DEFAULT_ROUTE, ROUTES

    p.add_argument(
        "--route",
        choices=list(ROUTES),
        default=DEFAULT_ROUTE,
        help=f"decoder: the run's predicted expression of the query genes; omics: "
        f"similarity in the shared space to the run's training spots high in the "
        f"query (default: {DEFAULT_ROUTE}, the better on held-out sections)",
    )
    p.add_argument(
        "--contrast",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="route omics: subtract the embedding of typical tissue (all training "
        "spots) from the query's (default); --no-contrast uses the raw embedding",
    )
    p.add_argument(
        "--omics-query",
        choices=["auto", "exemplar", "profile"],
        default="auto",
        help="route omics: exemplar = the run's training spots high in the query "
        "(needs the run's reference bank); profile = a synthetic profile (the query "
        "genes +2 SD); auto (default): exemplar when the run has a bank",
    )
    p.add_argument(
        "--spot-scores",
        metavar="SCORES.csv",
        help="also score each spot's centred patch and write spot_id,score "
        "(ST samples only)",
    )
    p.add_argument(
        "--store",
        metavar="STORE.zarr",
        help="an embedding store made with this run (`napari-seal embed "
        "--run`); default: embed into the workspace store of this slide and run, "
        "reused by later commands",
    )
    p.add_argument(
        "--top-q",
        type=float,
        default=0.1,
        metavar="Q",
        help="fraction of tissue tiles outlined in the saved contour "
        "(default 0.1 = top 10%%)",
    )
    add_batch_size(p, what="patches")
    p.add_argument(
        "--mpp",
        type=float,
        metavar="UM",
        help="slide pixel size override (um per level-0 pixel)",
    )
    add_common(p)
    p.set_defaults(func=run)
    return p


def _check(args: argparse.Namespace) -> None:
    if not args.gene and not args.signature:
        msg = (
            "the query names no gene: pass --gene ERBB2 (repeat it or separate "
            "genes with commas) or --signature FILE"
        )
        raise BadInputError(msg)
    if not (math.isfinite(args.top_q) and 0 < args.top_q <= 1):
        msg = f"--top-q must be in (0, 1] (0.1 = top 10 %), got {args.top_q}"
        raise BadInputError(msg)
    if args.batch_size < 1:
        msg = f"--batch-size must be at least 1, got {args.batch_size}"
        raise BadInputError(msg)


def run(args: argparse.Namespace) -> int:
    """Run ``napari-seal query``; return the exit code."""
    _check(args)
    import numpy as np

    from napari_seal.commands._util import print_progress_factory, resolve_device
    from napari_seal.retrieval.gene_query import query

    device = resolve_device(args.device)
    if not args.run:
        from napari_seal.models.shipped import shipped_run_path

        args.run = str(shipped_run_path())
    result = query(
        args.source,
        args.run,
        args.gene or None,
        signature=args.signature,
        route=args.route,
        store=args.store,
        out=args.out,
        spot_scores_csv=args.spot_scores,
        top_q=args.top_q,
        contrast=args.contrast,
        omics_query=args.omics_query,
        batch_size=args.batch_size,
        device=device,
        mpp=args.mpp,
        progress=print_progress_factory(),
    )
    s = result.scores
    finite = s[np.isfinite(s)]
    rng = f"{finite.min():.3f}..{finite.max():.3f}" if finite.size else "none"
    extra = f"; spot scores in {args.spot_scores}" if args.spot_scores else ""
    sys.stderr.write(
        f"query {result.query.label} ({result.route}): {finite.size} tiles scored "
        f"(range {rng}); wrote {args.out}{extra}\n"
    )
    return 0
