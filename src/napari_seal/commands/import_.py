"""``napari-seal import {visium,legacy-st,h5ad,hest} SOURCE... --out SAMPLE_DIR``.

::

    visium:    SPACERANGER_DIR [--image FULLRES]
    h5ad:      FILE.h5ad --image SLIDE
    hest:      HEST_ROOT --id ID
    legacy-st: --counts FILE --spots FILE --image FILE [--array-pitch-um 200]

Writes one sample in the HEST layout (``wsis/ st/ metadata/``), keeping every gene
and the raw counts. Without ``--mpp`` the pixel size comes from the image metadata or
is estimated from the spot grid (recorded as ``estimated``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_seal.commands._args import add_common
from napari_seal.commands._util import warnings_as_lines

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``import`` sub-command."""
    from napari_seal.io.st.contract import KINDS

    p = subparsers.add_parser(
        "import",
        help="import an ST sample (Visium, legacy ST, h5ad, HEST) to the HEST layout",
        description="Convert an ST sample into one HEST-layout folder "
        "(wsis/<id>.tif, st/<id>.h5ad, metadata/<id>.json). "
        "visium: SPACERANGER_DIR; h5ad: FILE.h5ad --image SLIDE; "
        "hest: HEST_ROOT --id ID; legacy-st: --counts FILE --spots FILE --image FILE.",
    )
    p.add_argument("kind", choices=list(KINDS), help="source kind")
    p.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="Space Ranger folder, .h5ad file or HEST root (none for legacy-st)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="SAMPLE_DIR",
        help="output sample folder (must not exist, or be empty)",
    )
    p.add_argument(
        "--mpp",
        type=float,
        metavar="UM",
        help="pixel size in micrometres per pixel (overrides metadata and "
        "the spot-grid estimate)",
    )
    p.add_argument(
        "--spot-diameter-um",
        type=float,
        metavar="UM",
        help="spot diameter (default: the technology's, e.g. Visium 55, ST 100)",
    )
    p.add_argument(
        "--image",
        metavar="FILE",
        help="the H&E image the spot coordinates refer to (h5ad, legacy-st; "
        "the full-resolution image for visium)",
    )
    p.add_argument("--counts", metavar="FILE", help="legacy-st counts table (XxY rows)")
    p.add_argument(
        "--spots",
        metavar="FILE",
        help="legacy-st spot table (x y pixel_x pixel_y selected)",
    )
    p.add_argument(
        "--array-pitch-um",
        type=float,
        default=200.0,
        metavar="UM",
        help="legacy-st micrometres per array step (default 200)",
    )
    p.add_argument(
        "--id",
        dest="sample_id",
        metavar="ID",
        help="sample id (required for a HEST folder with several samples)",
    )
    p.add_argument(
        "--jpeg-quality",
        type=int,
        default=90,
        metavar="Q",
        help="JPEG quality of the pyramidal TIFF (default 90)",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar (it is only drawn on a terminal)",
    )
    add_common(p, compute=False)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Import the sample; print the output folder; return 0.

    Warnings (dropped spots, a blank placeholder image, an uncertain pixel size) are
    printed as one line each on stderr.
    """
    from napari_seal.commands._util import print_progress_factory
    from napari_seal.errors import BadInputError
    from napari_seal.io.convert import import_sample

    if not 1 <= args.jpeg_quality <= 100:
        msg = f"--jpeg-quality must be in 1..100, got {args.jpeg_quality}"
        raise BadInputError(msg)
    show_bar = not args.quiet and sys.stderr.isatty()
    with warnings_as_lines():
        out = import_sample(
            args.kind,
            args.sources,
            out=args.out,
            mpp=args.mpp,
            spot_diameter_um=args.spot_diameter_um,
            sample_id=args.sample_id,
            image=args.image,
            counts=args.counts,
            spots=args.spots,
            array_pitch_um=args.array_pitch_um,
            jpeg_quality=args.jpeg_quality,
            progress=print_progress_factory() if show_bar else None,
        )
    sys.stdout.write(f"{out}\n")
    return 0
