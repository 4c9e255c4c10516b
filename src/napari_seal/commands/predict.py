"""``napari-seal predict``: predicted expression per tile (and per spot) as h5ad.

::

    napari-seal predict SAMPLE_OR_SLIDE (--run RUN_DIR | --encoder NAME --head HEAD)
        --out OUT.h5ad [--genes G1,G2] [--store STORE.zarr] [--batch-size B]
        [--mpp UM] [--max-tiles N] [--device D] [--debug]

For an ST sample (a HEST folder) ``OUT.h5ad`` holds the per-spot predictions (obs =
the sample's spot ids, ``var["pearson_r"]`` = Pearson r with the measured expression)
and ``OUT.tiles.h5ad`` the per-tile predictions; for a slide ``OUT.h5ad`` holds the
per-tile predictions (``obsm["spatial"]`` = level-0 tile centres).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_seal.errors import BadInputError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``predict`` sub-command."""
    from napari_seal.cli import add_common

    p = subparsers.add_parser(
        "predict",
        help="predict gene expression per tile (and per spot) into h5ad files",
        description="Embed the slide (or reuse --store), apply the run's image->gene "
        "decoder or a head saved by `napari-seal bench --save-head`, and write "
        "per-tile predictions (and per-spot predictions for an ST sample).",
    )
    p.add_argument(
        "source", metavar="SAMPLE_OR_SLIDE", help="a HEST sample folder or a slide file"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN_DIR", help="a SEAL run folder")
    src.add_argument(
        "--encoder", metavar="NAME", help="a registry encoder (with --head)"
    )
    p.add_argument("--weights", metavar="FILE", help="weight file for --encoder")
    p.add_argument(
        "--head",
        metavar="HEAD",
        help="a probe saved by `napari-seal bench --save-head`",
    )
    p.add_argument("--out", required=True, metavar="OUT.h5ad", help="output file")
    p.add_argument("--genes", metavar="G1,G2", help="genes to write (default: all)")
    p.add_argument(
        "--store",
        metavar="STORE.zarr",
        help="embedding store to use or create (default: "
        "OUT.embeddings.zarr next to OUT)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        metavar="B",
        help="tiles per forward pass (default 64)",
    )
    p.add_argument("--mpp", type=float, metavar="UM", help="slide pixel size override")
    p.add_argument(
        "--max-tiles", type=int, metavar="N", help="embed only the first N tissue tiles"
    )
    add_common(p)
    p.set_defaults(func=run)
    return p


def _check(args: argparse.Namespace) -> None:
    if args.encoder and not args.head:
        msg = (
            "--encoder needs --head HEAD (a probe saved by `napari-seal bench "
            "--save-head`); or pass a SEAL run with --run"
        )
        raise BadInputError(msg)
    if args.weights and args.run:
        msg = (
            "--weights goes with --encoder; a SEAL run (--run) carries its own weights"
        )
        raise BadInputError(msg)
    if args.batch_size < 1:
        msg = f"--batch-size must be at least 1, got {args.batch_size}"
        raise BadInputError(msg)


def run(args: argparse.Namespace) -> int:
    """Run ``napari-seal predict``; return the exit code."""
    _check(args)
    from napari_seal.commands._util import resolve_device
    from napari_seal.commands.embed import model_from_args, progress_bar
    from napari_seal.export import write_predictions

    device = resolve_device(args.device)
    genes = (
        [g.strip() for g in args.genes.split(",") if g.strip()] if args.genes else None
    )
    written = write_predictions(
        args.source,
        model_from_args(args, device),
        args.head,
        args.out,
        store=args.store,
        genes=genes,
        batch_size=args.batch_size,
        device=device,
        mpp=args.mpp,
        max_tiles=args.max_tiles,
        progress=progress_bar(),
    )
    for kind, path in written.items():
        sys.stderr.write(f"{kind}: {path}\n")
    return 0
