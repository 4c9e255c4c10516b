"""``napari-seal query``: score a gene (or signature) query on every tissue tile.

::

    napari-seal query SLIDE_OR_SAMPLE --run RUN_DIR --gene G [--gene G2 ...]
        [--signature FILE] --out SCORES.zarr [--route omics|decoder]
        [--spot-scores SCORES.csv] [--store STORE.zarr] [--top-q Q] [--no-contrast]
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from napari_seal.errors import BadInputError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``query`` sub-command."""
    from napari_seal.cli import add_common

    p = subparsers.add_parser(
        "query",
        help="gene -> image: score where the tissue matches a gene or signature",
        description="Score every tissue tile of a slide for a gene query with a SEAL "
        "run. Route omics (default): cosine between each tile's image embedding and "
        "the omics encoder's embedding of the query profile (query genes at +2 SD, "
        "others at their training mean), minus that of the all-mean profile "
        "(--no-contrast: without). Route decoder: the run's predicted "
        "expression of the query genes (weighted mean z-score). See docs/queries.md.",
    )
    p.add_argument(
        "source",
        metavar="SLIDE_OR_SAMPLE",
        help="a slide image or a HEST sample folder",
    )
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a SEAL run folder")
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
    p.add_argument(
        "--route",
        choices=["omics", "decoder"],
        default="omics",
        help="omics (default): shared-space similarity; decoder: predicted expression",
    )
    p.add_argument(
        "--contrast",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="route omics: compare with the query profile's embedding minus the "
        "all-mean profile's (default); --no-contrast uses the raw embedding",
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
        "--run`); default: embed into the cache, reused by later queries",
    )
    p.add_argument(
        "--top-q",
        type=float,
        default=0.1,
        metavar="Q",
        help="fraction of tissue tiles outlined in the saved contour "
        "(default 0.1 = top 10%%)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        metavar="B",
        help="patches per forward pass when embedding (default 64)",
    )
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
    from napari_seal.retrieval import query

    device = resolve_device(args.device)
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
