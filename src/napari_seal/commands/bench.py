"""``napari-seal bench``: the HEST probe benchmark of an encoder or a SEAL run.

::

    napari-seal bench --train SAMPLE... --test SAMPLE... (--encoder NAME | --run RUN)
        --json OUT.json [--targets hest|normalized] [--alpha hest|cv] [--save-head HEAD]
    napari-seal bench --loso SAMPLE... (--encoder NAME | --run RUN_DIR) --json OUT.json
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_seal.commands._args import add_batch_size, add_common, add_model
from napari_seal.errors import BadInputError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``bench`` sub-command."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark an encoder or SEAL run with the HEST linear probe",
        description="Fit the HEST probe (StandardScaler, PCA 256, ridge) on spot "
        "embeddings of the training samples and report Pearson r per gene on each "
        "test sample (or leave each sample out in turn with --loso). Samples are "
        "HEST-layout folders (see `napari-seal import`).",
    )
    p.add_argument("--train", nargs="+", metavar="SAMPLE", help="training samples")
    p.add_argument("--test", nargs="+", metavar="SAMPLE", help="test samples")
    p.add_argument(
        "--loso",
        nargs="+",
        metavar="SAMPLE",
        help="leave-one-sample-out over these samples (instead of --train/--test)",
    )
    add_model(
        p,
        encoder_help="registry encoder (default: `default`); `depth` = the depth "
        "oracle",
    )
    p.add_argument(
        "--json",
        required=True,
        metavar="OUT.json",
        help="where to write the report (`-` = stdout)",
    )
    p.add_argument(
        "--targets",
        choices=["hest", "normalized"],
        default="hest",
        help="hest = log1p raw counts (default); normalized = 1e4 per spot, then log1p",
    )
    p.add_argument(
        "--alpha",
        choices=["hest", "cv"],
        default="hest",
        help="hest = 100/(n_pc*50) (default); cv = inner "
        "leave-one-sample-out on the training samples",
    )
    p.add_argument(
        "--save-head",
        metavar="HEAD",
        help="save the fitted probe to this file (safetensors: arrays + a JSON "
        "description) for `predict --encoder NAME --head HEAD`",
    )
    add_batch_size(p, what="patches")
    add_common(p)
    p.set_defaults(func=run)
    return p


def _check(args: argparse.Namespace) -> None:
    if args.loso and (args.train or args.test):
        msg = (
            "--loso replaces --train/--test; give either --loso SAMPLE... or both "
            "--train and --test"
        )
        raise BadInputError(msg)
    if not args.loso:
        if not args.train and not args.test:
            msg = "give --train SAMPLE... --test SAMPLE..., or --loso SAMPLE..."
            raise BadInputError(msg)
        if not args.test:
            msg = (
                "--train needs --test SAMPLE... (or use --loso SAMPLE... to leave "
                "each sample out in turn)"
            )
            raise BadInputError(msg)
        if not args.train:
            msg = "--test needs --train SAMPLE... to fit the probe on"
            raise BadInputError(msg)
    elif len(args.loso) < 2:
        msg = f"--loso needs at least 2 samples, got {len(args.loso)}; add samples"
        raise BadInputError(msg)
    if args.weights and args.run:
        msg = (
            "--weights goes with --encoder; a SEAL run (--run) carries its own weights"
        )
        raise BadInputError(msg)
    if args.save_head and args.loso:
        msg = "--save-head needs one fitted probe: use --train/--test, not --loso"
        raise BadInputError(msg)
    if args.batch_size < 1:
        msg = f"--batch-size must be at least 1, got {args.batch_size}"
        raise BadInputError(msg)
    from napari_seal.io.atomic import checked_output_path

    for path in (args.json, args.save_head):  # an impossible name before any work
        if path and path != "-":
            checked_output_path(path)


def run(args: argparse.Namespace) -> int:
    """Run ``napari-seal bench``; return the exit code."""
    _check(args)
    from napari_seal.commands._util import (
        print_progress_factory,
        resolve_device,
        write_json,
    )
    from napari_seal.evaluate.benchmark import bench

    device = resolve_device(args.device)
    loso = bool(args.loso)
    result = bench(
        args.loso if loso else args.train,
        None if loso else args.test,
        encoder=args.encoder,
        run=args.run,
        weights=args.weights,
        targets=args.targets,
        alpha=args.alpha,
        loso=loso,
        save_head=args.save_head,
        batch_size=args.batch_size,
        device=device,
        progress=print_progress_factory(),
    )
    write_json(result, args.json)
    if args.json != "-":
        sys.stderr.write(
            f"{result['encoder']}: mean Pearson {result['pearson_mean']:.4f} over "
            f"{len(result['folds'])} test sample(s) (depth oracle "
            f"{result['depth_oracle']['pearson_mean']:.4f}); wrote {args.json}\n"
        )
    return 0
