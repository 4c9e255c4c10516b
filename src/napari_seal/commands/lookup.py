"""``napari-seal lookup``: image -> expression, the reference spots nearest a region.

::

    napari-seal lookup SLIDE_OR_SAMPLE --run RUN_DIR --at X,Y --reference SAMPLE...
        [--k 10] [--space image|omics|both] --json OUT.json
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_seal.commands._args import add_batch_size, add_common
from napari_seal.errors import BadInputError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``lookup`` sub-command."""
    p = subparsers.add_parser(
        "lookup",
        help="image -> expression: nearest reference spots to a region",
        description="Embed a region of a slide with a SEAL run (the patch centred on "
        "X,Y, or the tiles inside a polygon X1,Y1;X2,Y2;...) and list the k nearest "
        "spots of the reference ST samples with their measured expression (mean "
        "log1p CP10k over the k spots). See docs/queries.md.",
    )
    p.add_argument(
        "source",
        metavar="SLIDE_OR_SAMPLE",
        help="a slide image or a HEST sample folder",
    )
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a SEAL run folder")
    p.add_argument(
        "--at",
        required=True,
        metavar="X,Y",
        help="level-0 pixel X,Y (or a polygon X1,Y1;X2,Y2;X3,Y3)",
    )
    p.add_argument(
        "--reference",
        required=True,
        nargs="+",
        metavar="SAMPLE",
        help="reference ST samples (HEST sample folders)",
    )
    p.add_argument("--k", type=int, default=10, help="number of nearest spots (10)")
    p.add_argument(
        "--space",
        choices=["image", "omics", "both"],
        default="image",
        help="compare with the reference spots' image embeddings (default), "
        "their omics embeddings (shared space), or both",
    )
    p.add_argument(
        "--genes",
        type=int,
        default=20,
        metavar="N",
        help="genes listed in the expression summary (20)",
    )
    p.add_argument(
        "--store",
        metavar="STORE.zarr",
        help="an embedding store made with this run (polygons use its tiles)",
    )
    p.add_argument(
        "--json",
        required=True,
        metavar="OUT.json",
        help="where to write the result (`-` = stdout)",
    )
    add_batch_size(p, what="patches")
    add_common(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``napari-seal lookup``; return the exit code."""
    if args.k < 1:
        msg = f"--k must be at least 1, got {args.k}"
        raise BadInputError(msg)
    if args.genes < 1:
        msg = f"--genes must be at least 1, got {args.genes}"
        raise BadInputError(msg)
    if args.json != "-":  # refuse an impossible name before any work
        from napari_seal.io.atomic import checked_output_path

        checked_output_path(args.json)
    from napari_seal.commands._util import (
        print_progress_factory,
        resolve_device,
        write_json,
    )
    from napari_seal.retrieval.spot_lookup import lookup

    device = resolve_device(args.device)
    result = lookup(
        args.source,
        args.run,
        at_xy=args.at,
        references=args.reference,
        k=args.k,
        space=args.space,
        n_genes=args.genes,
        store=args.store,
        batch_size=args.batch_size,
        device=device,
        progress=print_progress_factory(),
    )
    write_json(result, args.json)
    if args.json != "-":
        best = result["neighbours"][0]
        top = ", ".join(g["gene"] for g in result["expression"]["enriched_genes"][:5])
        sys.stderr.write(
            f"nearest spot {best['sample']}:{best['spot_id']} (similarity "
            f"{best['similarity']:.3f}); enriched: {top}; wrote {args.json}\n"
        )
    return 0
