"""The arguments several sub-commands share, defined once.

- :func:`add_common`: ``--device`` and ``--debug`` (every computing command);
- :func:`add_model`: what to embed with: ``--encoder NAME [--weights FILE]`` or
  ``--run RUN_DIR`` (mutually exclusive where both are allowed);
- :func:`add_batch_size`: ``--batch-size B``.

No command imports another command; ``napari_seal.cli`` imports the commands.
"""

from __future__ import annotations

import argparse

__all__ = ["add_batch_size", "add_common", "add_model"]


def add_common(parser: argparse.ArgumentParser, *, compute: bool = True) -> None:
    """Add the flags every computing command takes (``--device``, ``--debug``)."""
    if compute:
        parser.add_argument(
            "--device",
            default="auto",
            choices=["auto", "cpu", "cuda", "mps"],
            help="where to compute (default: auto = cuda, then mps, then cpu)",
        )
    parser.add_argument(
        "--debug", action="store_true", help="show full tracebacks and debug logs"
    )


def add_model(
    parser: argparse.ArgumentParser,
    *,
    encoder_help: str = "registry encoder (default: `default`, the embedded "
    "EfficientNet-Lite0)",
    run: bool = True,
    required: bool = False,
) -> None:
    """Add ``--encoder NAME`` / ``--run RUN_DIR`` (exclusive) and ``--weights FILE``."""
    group = parser.add_mutually_exclusive_group(required=required) if run else parser
    group.add_argument("--encoder", metavar="NAME", help=encoder_help)
    if run:
        group.add_argument("--run", metavar="RUN_DIR", help="a SEAL run folder")
    parser.add_argument("--weights", metavar="FILE", help="weight file for --encoder")


def add_batch_size(
    parser: argparse.ArgumentParser, *, what: str = "tiles", default: int = 64
) -> None:
    """Add ``--batch-size B`` (images per forward pass)."""
    parser.add_argument(
        "--batch-size",
        type=int,
        default=default,
        metavar="B",
        help=f"{what} per forward pass (default {default})",
    )
