"""``napari-seal demo``: the SEAL loop on the bundled sample, with a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_seal.commands._args import add_common


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    p = sub.add_parser(
        "demo",
        help="the shipped model, then import -> fine-tune -> embed -> overlay -> query "
        "on the bundled sample",
        description="Run the SEAL loop on the bundled her2st section headless and "
        "write OUT/report.md with viewer screenshots and plots: first the SEAL model "
        "shipped with napari-seal (its held-out numbers and predicted ERBB2, no "
        "training), then a short fine-tune on the section and what it gives.",
    )
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: demo/ in the workspace, "
                   "$NAPARI_SEAL_CACHE or the user cache folder)")
    p.add_argument("--epochs", type=int, default=2,
                   help="fine-tuning epochs (default 2)")
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-tiles", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--show", action="store_true",
                   help="open the viewer at the end (needs a display)")
    p.add_argument("--no-report", action="store_true",
                   help="skip the screenshots (no display or Xvfb available)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and render its report."""
    from napari_seal.commands._util import print_progress_factory, resolve_device
    from napari_seal.demo import demo

    device = resolve_device(args.device)
    if args.out is None:
        from napari_seal.io.workspace import workspace_root

        args.out = workspace_root() / "demo"
    result = demo(args.out, epochs=args.epochs, max_steps=args.max_steps,
                  max_tiles=args.max_tiles, device=device,
                  progress=print_progress_factory())
    if args.no_report:
        sys.stdout.write(f"demo finished: {result.out / 'demo.json'}\n")
        return 0
    from napari_seal._widgets._report import render_report

    report = render_report(result, show=args.show)
    sys.stdout.write(f"demo report: {report}\n")
    return 0
