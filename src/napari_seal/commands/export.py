"""``napari-seal export``: an embedding store as TRIDENT/CLAM h5 or QuPath GeoJSON.

::

    napari-seal export STORE.zarr --format trident-h5 --out FEATURES.h5
    napari-seal export STORE.zarr --format geojson --out REGIONS.geojson --gene G
        (--run RUN_DIR | --head HEAD) [--threshold Q | --threshold-value V]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_seal.commands._args import add_common
from napari_seal.errors import BadInputError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``export`` sub-command."""
    p = subparsers.add_parser(
        "export",
        help="export embeddings (TRIDENT/CLAM h5) or gene regions (QuPath GeoJSON)",
        description="trident-h5: `features` (n, D) and `coords` (n, 2: level-0 x, y "
        "of each tile's top-left) as TRIDENT and CLAM read them. geojson: polygons "
        "(level-0 pixels) around the tiles whose predicted expression of --gene is at "
        "or above the threshold, for QuPath (File > Import objects).",
    )
    p.add_argument("store", metavar="STORE.zarr", help="an embedding store")
    p.add_argument(
        "--format",
        required=True,
        choices=["trident-h5", "geojson"],
        dest="fmt",
        help="output format",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="output file")
    p.add_argument("--gene", metavar="G", help="gene to outline (geojson)")
    thr = p.add_mutually_exclusive_group()
    thr.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="Q",
        help="quantile of the on-tissue tile values in [0, 1] (default 0.9)",
    )
    thr.add_argument(
        "--threshold-value",
        type=float,
        default=None,
        metavar="V",
        help="absolute threshold in the head's units (instead of a quantile)",
    )
    head = p.add_mutually_exclusive_group()
    head.add_argument("--run", metavar="RUN_DIR", help="SEAL run (its decoder)")
    head.add_argument(
        "--head", metavar="HEAD", help="a probe saved by `bench --save-head`"
    )
    add_common(p, compute=False)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``napari-seal export``; return the exit code."""
    from napari_seal.predict.export import export_geojson, export_trident_h5

    if args.fmt == "trident-h5":
        if args.gene:
            msg = "--gene is for --format geojson; trident-h5 exports all embeddings"
            raise BadInputError(msg)
        out = export_trident_h5(args.store, args.out)
    else:
        if not args.gene:
            msg = "--format geojson needs --gene G (the gene to outline)"
            raise BadInputError(msg)
        if not (args.run or args.head):
            msg = (
                "--format geojson needs the expression head: --run RUN_DIR or "
                "--head HEAD (saved by `napari-seal bench --save-head`)"
            )
            raise BadInputError(msg)
        out = export_geojson(
            args.store,
            args.run or args.head,
            args.gene,
            args.out,
            quantile=0.9 if args.threshold is None else args.threshold,
            value=args.threshold_value,
        )
    sys.stderr.write(f"wrote {out}\n")
    return 0
