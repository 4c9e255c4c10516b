"""``napari-seal embed``: embed a whole slide into a resumable zarr store.

::

    napari-seal embed SLIDE_OR_SAMPLE --out STORE.zarr [--encoder NAME [--weights FILE]
        | --run RUN_DIR] [--batch-size B] [--stride-px S] [--scheduler ADDRESS]
        [--mpp UM] [--tissue-threshold T] [--max-tiles N] [--device D] [--debug]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_seal.errors import BadInputError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``embed`` sub-command."""
    from napari_seal.cli import add_common

    p = subparsers.add_parser(
        "embed",
        help="embed every tissue tile of a slide into a zarr store (resumable)",
        description="Tile the slide at the encoder's patch size and pixel size, embed "
        "every tissue tile and write the embeddings, tile ids and level-0 coordinates "
        "to a zarr store. Rerunning the same command resumes an interrupted run; a "
        "store made from another slide, encoder or tiling is refused.",
    )
    p.add_argument(
        "source", metavar="SLIDE_OR_SAMPLE", help="a slide file or a HEST sample folder"
    )
    p.add_argument("--out", required=True, metavar="STORE.zarr", help="the store")
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--encoder",
        metavar="NAME",
        help="registry encoder (default: `default`, the embedded EfficientNet-Lite0)",
    )
    src.add_argument("--run", metavar="RUN_DIR", help="a SEAL run folder")
    p.add_argument("--weights", metavar="FILE", help="weight file for --encoder")
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        metavar="B",
        help="tiles per forward pass (default 64)",
    )
    p.add_argument(
        "--stride-px",
        type=int,
        metavar="S",
        help="tile stride in encoder pixels (default: the tile size, no "
        "overlap); S < tile size gives finer maps at (tile/S)^2 the compute",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run the chunk tasks on a dask.distributed scheduler (tcp://HOST:8786)",
    )
    p.add_argument(
        "--scheduler-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for the scheduler to answer (default 10)",
    )
    p.add_argument(
        "--mpp",
        type=float,
        metavar="UM",
        help="slide pixel size in um/px (overrides metadata)",
    )
    p.add_argument(
        "--tissue-threshold",
        type=float,
        metavar="T",
        help="tissue threshold on saturation in [0, 1] (default: Otsu)",
    )
    p.add_argument(
        "--max-tiles",
        type=int,
        metavar="N",
        help="embed only the first N tissue tiles (a budget for tests and benchmarks)",
    )
    add_common(p)
    p.set_defaults(func=run)
    return p


def _check(args: argparse.Namespace) -> None:
    if args.weights and args.run:
        msg = (
            "--weights goes with --encoder; a SEAL run (--run) carries its own weights"
        )
        raise BadInputError(msg)
    if args.batch_size < 1:
        msg = f"--batch-size must be at least 1, got {args.batch_size}"
        raise BadInputError(msg)
    if args.stride_px is not None and args.stride_px < 1:
        msg = f"--stride-px must be at least 1, got {args.stride_px}"
        raise BadInputError(msg)
    if args.max_tiles is not None and args.max_tiles < 1:
        msg = f"--max-tiles must be at least 1, got {args.max_tiles}"
        raise BadInputError(msg)
    if not args.scheduler_timeout > 0:
        msg = (
            "--scheduler-timeout must be a positive number of seconds, got "
            f"{args.scheduler_timeout}"
        )
        raise BadInputError(msg)
    if args.mpp is not None and args.mpp <= 0:
        msg = f"--mpp must be positive (um per pixel), got {args.mpp}"
        raise BadInputError(msg)


def model_from_args(args: argparse.Namespace, device: str) -> Any:
    """Return the encoder (``--encoder``/``--weights``) or run path (``--run``)."""
    if args.run:
        return args.run
    from napari_seal.models.registry import create_encoder

    return create_encoder(
        args.encoder or "default", weights=args.weights, device=device
    )


def progress_bar() -> Any:
    """A terminal bar (tiles/s, ETA) that appears once the tile count is known.

    Set-up problems (store mismatch, no tissue...) then print only their one-line
    error, without an empty bar.
    """
    from napari_seal.commands._util import print_progress_factory

    bar = print_progress_factory()

    def callback(event: Any) -> None:
        if getattr(event, "total", None):
            bar(event)

    return callback


def run(args: argparse.Namespace) -> int:
    """Run ``napari-seal embed``; return the exit code."""
    _check(args)
    from napari_seal.commands._util import resolve_device
    from napari_seal.embed import embed

    device = resolve_device(args.device)
    store = embed(
        args.source,
        model_from_args(args, device),
        args.out,
        batch_size=args.batch_size,
        stride_px=args.stride_px,
        scheduler=args.scheduler,
        scheduler_timeout_s=args.scheduler_timeout,
        mpp=args.mpp,
        tissue_threshold=args.tissue_threshold,
        max_tiles=args.max_tiles,
        device=device,
        progress=progress_bar(),
    )
    sys.stderr.write(f"wrote {store}\n")
    return 0
