"""``napari-seal predict``: predicted expression per tile (and per spot) as h5ad.

::

    napari-seal predict SAMPLE_OR_SLIDE [--run RUN_DIR | --encoder NAME --head HEAD]
        --out OUT.h5ad [--genes G1,G2] [--store STORE.zarr] [--batch-size B]
        [--mpp UM] [--max-tiles N] [--device D] [--debug]

Without --run and --encoder/--head it uses the SEAL model shipped with the package
(:func:`napari_seal.models.shipped.shipped_run_path`): no training needed.

For an ST sample (a HEST folder) ``OUT.h5ad`` holds the per-spot predictions (obs =
the sample's spot ids, ``var["pearson_r"]`` = Pearson r with the measured expression)
and ``OUT.tiles.h5ad`` the per-tile predictions; for a slide ``OUT.h5ad`` holds the
per-tile predictions (``obsm["spatial"]`` = level-0 tile centres).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_seal.commands._args import add_batch_size, add_common, add_model
from napari_seal.errors import BadInputError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``predict`` sub-command."""
    p = subparsers.add_parser(
        "predict",
        help="predict gene expression per tile (and per spot) into h5ad files",
        description="Embed the slide (or reuse --store), apply the run's image->gene "
        "decoder or a head saved by `napari-seal bench --save-head`, and write "
        "per-tile predictions (and per-spot predictions for an ST sample). Without "
        "--run or --encoder/--head: the SEAL model shipped with napari-seal "
        "(seal-default-her2st, see docs/models.md).",
    )
    p.add_argument(
        "source", metavar="SAMPLE_OR_SLIDE", help="a HEST sample folder or a slide file"
    )
    add_model(p, encoder_help="a registry encoder (with --head)")
    p.add_argument(
        "--head",
        metavar="HEAD",
        help="a probe saved by `napari-seal bench --save-head` (alone: on the "
        "`default` encoder)",
    )
    p.add_argument("--out", required=True, metavar="OUT.h5ad", help="output file")
    p.add_argument("--genes", metavar="G1,G2", help="genes to write (default: all)")
    p.add_argument(
        "--store",
        metavar="STORE.zarr",
        help="embedding store to use or create (default: the workspace store of "
        "this slide and model, reused by later commands)",
    )
    add_batch_size(p, what="tiles")
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
    from napari_seal.commands._util import model_from_args, progress_bar, resolve_device
    from napari_seal.predict.export import write_predictions

    device = resolve_device(args.device)
    if not (args.run or args.encoder or args.head):
        from napari_seal.models.shipped import shipped_run_path

        args.run = str(shipped_run_path())
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
