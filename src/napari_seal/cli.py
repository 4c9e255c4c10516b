"""The ``napari-seal`` command line (contract: DESIGN.md section 5).

Each sub-command lives in ``napari_seal.commands.<name>`` (shared flags in
``napari_seal.commands._args``) with two functions:
``add_parser(subparsers)`` and ``run(args) -> int``. They call one public core
function each, so the CLI, Python and the napari widgets share the same path.

Exit codes: 0 ok, 2 bad input (one line on stderr, no traceback unless ``--debug``),
1 internal error, 130 interrupted (state left resumable).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from napari_seal.errors import SealError

__all__ = ["build_parser", "main"]

# sub-command name -> module under napari_seal.commands
COMMANDS = {
    "info": "info",
    "import": "import_",
    "train": "train",
    "embed": "embed",
    "predict": "predict",
    "query": "query",
    "lookup": "lookup",
    "export": "export",
    "bench": "bench",
    "view": "view",
    "demo": "demo",
}


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors exit 2 with one line (argparse's default)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"napari-seal: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the full ``napari-seal`` argument parser."""
    parser = _Parser(
        prog="napari-seal",
        description="SEAL for napari: align pathology foundation models with spatial "
        "transcriptomics; predict and query gene expression on H&E.",
    )
    from napari_seal import __version__

    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"napari_seal.commands.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"napari_seal.commands.{module_name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    # other libraries' warnings (e.g. tifffile on a damaged file) only with --debug:
    # a bad input then gives exactly one line on stderr, our own error message
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("napari_seal").setLevel(
        logging.DEBUG if debug else logging.WARNING
    )
    try:
        return int(args.func(args) or 0)
    except SealError as err:
        if debug:
            raise
        msg = " ".join(str(err).split())
        sys.stderr.write(f"napari-seal: error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        # a progress bar may own the current line: the message gets its own
        sys.stderr.write(
            "\nnapari-seal: interrupted; finished work is kept, rerun to resume\n"
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
