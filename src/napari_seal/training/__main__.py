"""``torchrun --nproc-per-node N -m napari_seal.training SAMPLE... --out RUN``.

Multi-process (DistributedDataParallel) training with the flags of
``napari-seal train``. Each process trains on its share of every global batch; CLIP
negatives are gathered across processes. Rank 0 writes the run directory and draws
the progress bar. Without torchrun (``WORLD_SIZE`` unset) it trains in one process.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the flags, join the process group, train; return the exit code."""
    from napari_seal.cli import add_common
    from napari_seal.commands.train import add_train_arguments, config_from_args
    from napari_seal.errors import SealError

    parser = argparse.ArgumentParser(
        prog="python -m napari_seal.training", description=__doc__.splitlines()[0]
    )
    add_train_arguments(parser)
    add_common(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from napari_seal.commands._util import print_progress_factory, resolve_device
    from napari_seal.io.hest import load_sample
    from napari_seal.training.ddp import cleanup_distributed, init_distributed
    from napari_seal.training.trainer import train

    try:
        device = resolve_device(args.device)
        info = init_distributed(device=device)
        if device == "cuda":
            device = f"cuda:{info.local_rank}"
        config = config_from_args(args, device=device)
        samples = [load_sample(p) for p in args.samples]
        progress = print_progress_factory() if info.is_main else None
        out = train(
            samples,
            out=args.out,
            config=config,
            resume=args.resume,
            device=device,
            progress=progress,
        )
        if info.is_main:
            sys.stdout.write(f"{out}\n")
        return 0
    except SealError as err:
        if args.debug:
            raise
        sys.stderr.write(f"napari-seal: error: {' '.join(str(err).split())}\n")
        return 2
    finally:
        cleanup_distributed()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
