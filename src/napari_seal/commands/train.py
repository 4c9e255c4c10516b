"""``napari-seal train SAMPLE... --out RUN_DIR``: fine-tune an encoder with SEAL.

Flags map 1:1 to :class:`~napari_seal.training.config.TrainConfig` fields; the preset
(default: the one :func:`~napari_seal.training.config.preset_for_device` picks) fills
the rest. Ctrl-C stops at the next step with a checkpoint (exit 130); rerun with
``--resume`` to continue. ``torchrun ... -m napari_seal.training`` takes the same flags.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from napari_seal.commands._args import add_common

__all__ = ["add_parser", "add_train_arguments", "config_from_args", "run"]


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Add the training flags (shared with ``python -m napari_seal.training``)."""
    from napari_seal.training.config import PRESETS

    p.add_argument(
        "samples",
        nargs="+",
        metavar="SAMPLE",
        help="HEST-layout sample folders (napari-seal import writes them)",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="RUN_DIR",
        help="run directory to create (or to continue with --resume)",
    )
    p.add_argument(
        "--encoder",
        metavar="NAME",
        help="base encoder (default: the embedded 'default')",
    )
    p.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="local weight file of the base encoder",
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        help="settings sized for the hardware (default: picked for --device)",
    )
    p.add_argument("--epochs", type=int, metavar="N")
    p.add_argument(
        "--batch-size", type=int, metavar="B", help="global batch size (spots per step)"
    )
    p.add_argument(
        "--max-steps", type=int, metavar="N", help="stop after N optimiser steps"
    )
    p.add_argument("--lr", type=float, metavar="LR", help="AdamW learning rate")
    p.add_argument(
        "--n-genes",
        type=int,
        metavar="N",
        help="highly variable genes in the panel (markers are added on top)",
    )
    p.add_argument(
        "--include-genes",
        metavar="G1,G2|FILE",
        help="genes always in the panel: comma-separated or a text file",
    )
    p.add_argument("--augment", choices=["none", "soft", "hard"])
    p.add_argument(
        "--augment-views",
        type=int,
        metavar="K",
        help="K > 0: K augmented views per spot through the frozen layers once "
        "(fast on CPU); 0: fresh augmentation every step",
    )
    p.add_argument("--precision", choices=["bf16", "fp32"])
    p.add_argument(
        "--eval-fraction",
        type=float,
        metavar="F",
        help="hold out this fraction of spots for per-epoch metrics",
    )
    p.add_argument(
        "--shuffle-pairs",
        action="store_true",
        default=None,
        help="control run: shuffle which expression belongs to which spot",
    )
    p.add_argument("--seed", type=int, metavar="S")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its latest checkpoint",
    )


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help="fine-tune an encoder with SEAL on ST samples (LoRA + omics VAE)",
        description="Fine-tune a pathology encoder with SEAL: LoRA on its last blocks, "
        "aligned by a CLIP loss to an omics VAE of the spots' expression. Writes a run "
        "directory that embed/predict/query/bench take with --run.",
    )
    add_train_arguments(p)
    add_common(p)
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace, *, device: str):
    """Build the :class:`TrainConfig` that the flags ask for."""
    import json

    import napari_seal.training.runs as runs
    from napari_seal.training.config import (
        TrainConfig,
        config_from_preset,
        preset_for_device,
    )
    from napari_seal.training.expression import parse_gene_list

    overrides: dict[str, Any] = {
        "encoder": args.encoder,
        "weights": str(Path(args.weights).expanduser().resolve())
        if args.weights
        else None,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_steps": args.max_steps,
        "lr": args.lr,
        "n_genes": args.n_genes,
        "augment": args.augment,
        "augment_views": args.augment_views,
        "precision": args.precision,
        "eval_fraction": args.eval_fraction,
        "shuffle_pairs": args.shuffle_pairs,
        "seed": args.seed,
        "include_genes": parse_gene_list(args.include_genes)
        if args.include_genes
        else None,
    }
    if args.resume and runs.is_run_dir(args.out):
        saved = json.loads((Path(args.out) / runs.CONFIG).read_text())
        saved.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig.from_dict(saved)
    preset = args.preset or preset_for_device(device)
    return config_from_preset(preset, **overrides)


@contextlib.contextmanager
def _graceful_sigint() -> Iterator[threading.Event]:
    """First Ctrl-C sets the event (stop at the next step); a second one interrupts."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        sys.stderr.write(
            "\nnapari-seal: stopping after this step (Ctrl-C again to abort)\n"
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def run(args: argparse.Namespace) -> int:
    """Load the samples, train, print the run directory; return the exit code.

    Under ``torchrun --nproc-per-node N -m napari_seal train ...`` (``WORLD_SIZE`` > 1)
    every process joins the process group and trains on its share of each global
    batch (DistributedDataParallel, CLIP negatives gathered across ranks); rank 0
    writes the run directory and draws the progress bar.
    """
    from napari_seal.commands._util import print_progress_factory, resolve_device
    from napari_seal.io.hest import load_sample
    from napari_seal.training.ddp import cleanup_distributed, init_distributed
    from napari_seal.training.trainer import iter_train

    device = resolve_device(args.device)
    try:
        info = init_distributed(device=device)
        if device == "cuda" and info.world_size > 1:
            device = f"cuda:{info.local_rank}"
        config = config_from_args(args, device=device)
        samples = [load_sample(p) for p in args.samples]
        callback = print_progress_factory() if info.is_main else (lambda event: None)
        gen = iter_train(
            samples, out=args.out, config=config, resume=args.resume, device=device
        )
        with _graceful_sigint() as stop:
            while True:
                try:
                    event = next(gen)
                except StopIteration as done:
                    result = done.value
                    break
                callback(event)
                if stop.is_set():
                    gen.close()  # writes a checkpoint of the last finished step
                    sys.stderr.write(
                        f"napari-seal: stopped; resume with --out {args.out} --resume\n"
                    )
                    return 130
        if info.is_main:
            sys.stdout.write(f"{result}\n")
        return 0
    finally:
        cleanup_distributed()
