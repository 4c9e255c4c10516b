"""``napari-seal info PATH [--json]``: describe a slide or an ST sample.

Prints one JSON object with ``--json`` (DESIGN 5): ``kind`` ("slide" or "sample"),
``name``, ``mpp``, ``mpp_source``, ``width_px``, ``height_px``, ``levels`` and, for
samples, ``n_spots``, ``n_genes``, ``spot_diameter_um``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from napari_seal.commands._args import add_common

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``info`` sub-command."""
    p = subparsers.add_parser(
        "info",
        help="describe a slide or an ST sample (pixel size, size, spots, genes)",
        description="Describe a slide (SVS, TIFF, JPEG, PNG...), a HEST sample folder, "
        "a Space Ranger output folder or an .h5ad with an image reference.",
    )
    p.add_argument("path", metavar="PATH", help="slide, sample folder or .h5ad")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--mpp",
        type=float,
        metavar="UM",
        help="pixel size override (micrometres per level-0 pixel)",
    )
    p.add_argument(
        "--id",
        dest="sample_id",
        metavar="ID",
        help="which sample of a folder holding several",
    )
    add_common(p, compute=False)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.path``; return 0."""
    from napari_seal.commands._util import warnings_as_lines
    from napari_seal.io.convert import describe

    with warnings_as_lines():
        info = describe(args.path, mpp=args.mpp, sample_id=args.sample_id)
    if args.json:
        sys.stdout.write(json.dumps(info, default=str) + "\n")
        return 0
    for key, value in info.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        sys.stdout.write(f"{key}: {value}\n")
    return 0
