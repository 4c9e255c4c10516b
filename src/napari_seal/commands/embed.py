"""``napari-seal embed``: embed a whole slide into a resumable zarr store.

::

    napari-seal embed SLIDE_OR_SAMPLE --out STORE.zarr [--encoder NAME [--weights FILE]
        | --run RUN_DIR] [--batch-size B] [--stride-px S] [--scheduler ADDRESS]
        [--mpp UM] [--tissue-threshold T] [--max-tiles N] [--precision P] [--compile]
        [--device D] [--debug]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_seal.commands._args import add_batch_size, add_common, add_model
from napari_seal.errors import BadInputError

__all__ = ["add_parser", "run"]

# napari_seal.models.precision.PRECISIONS, spelled out: parsing stays torch-free
_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``embed`` sub-command."""
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
    add_model(p)
    add_batch_size(p, what="tiles")
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
    p.add_argument(
        "--precision",
        default="auto",
        metavar="P",
        help="inference precision: auto (default: bf16 where the CPU or GPU runs it "
        "natively, else fp32), fp32, bf16, or fp16 (CUDA only); recorded in the store",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the encoder through torch.compile (faster steady state after a "
        "one-off compile, about a minute on CPU; the compile time is reported)",
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
    if args.precision not in _PRECISIONS:
        msg = (
            f"--precision must be one of {', '.join(_PRECISIONS)}, got "
            f"{args.precision!r}; auto picks bf16 where the hardware runs it natively"
        )
        raise BadInputError(msg)
    if args.compile and args.scheduler:
        msg = (
            "--compile runs locally; drop it with --scheduler (each worker would "
            "compile on its own)"
        )
        raise BadInputError(msg)


def _how(store: Any) -> str:
    """`` (bf16, channels_last, compiled in 52.1 s)`` from the store's attrs."""
    import zarr

    info = dict(zarr.open_group(store, mode="r").attrs).get("inference") or {}
    parts = [str(info.get(k)) for k in ("precision", "memory_format") if info.get(k)]
    if info.get("compile"):
        parts.append(f"compiled in {info.get('compile_s') or 0:.1f} s")
    return f" ({', '.join(parts)})" if parts else ""


def run(args: argparse.Namespace) -> int:
    """Run ``napari-seal embed``; return the exit code."""
    _check(args)
    from napari_seal.commands._util import model_from_args, progress_bar, resolve_device
    from napari_seal.embedding.run import embed

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
        precision=args.precision,
        compile=args.compile,
        progress=progress_bar(),
    )
    sys.stderr.write(f"wrote {store}{_how(store)}\n")
    return 0
