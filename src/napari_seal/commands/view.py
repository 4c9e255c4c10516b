"""``napari-seal view``: the slide in napari with predicted expression where you look.

::

    napari-seal view SLIDE_OR_SAMPLE [--run RUN_DIR | --encoder NAME [--weights FILE]
        --head HEAD] [--gene G] [--route omics|decoder] [--center-um X,Y] [--fov-um W]
        [--workspace DIR] [--store STORE.zarr] [--screenshot OUT.png] [--json OUT.json]
        [--exit-when-ready] [--batch-size B] [--mpp UM] [--device D] [--debug]

The Explore panel is docked, steering the overlay (a SEAL run, the shipped model, or
the encoder with its saved head): type another gene there. The tiles in the field of
view are embedded first, nearest its centre, and written into the slide's embedding
store (default: the workspace store of this slide and model, shared with ``embed``,
``predict`` and ``query``). Without a model option it uses the SEAL model shipped with
the package. ``--gene`` paints the predicted
expression (the run's decoder or the saved head); with ``--route`` it paints the
gene-query score of that route instead (a SEAL run). ``--exit-when-ready`` waits until
the view is complete, saves ``--screenshot`` and writes ``--json``: ``visible_tiles``,
``tiles_computed``, ``first_paint_s``, ``visible_complete_s`` (from the moment the
slide is shown), ``max_stall_ms``, ``store``, ``model``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

from napari_seal.commands._args import add_batch_size, add_common, add_model
from napari_seal.errors import BadInputError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``view`` sub-command."""
    p = subparsers.add_parser(
        "view",
        help="open a slide or sample in napari with a lazily computed overlay",
        description="Open napari with the slide (and spots for a sample) and the "
        "Explore panel, centre the camera and paint --gene's predicted expression "
        "over the field of view first "
        "(computed on demand, cached in the embedding store). Without --run or "
        "--encoder/--head: the SEAL model shipped with napari-seal.",
    )
    p.add_argument("source", metavar="SLIDE_OR_SAMPLE", help="a slide or sample folder")
    add_model(p, encoder_help="a registry encoder (with --head)")
    p.add_argument(
        "--head", metavar="HEAD", help="a probe saved by `bench --save-head`"
    )
    p.add_argument(
        "--gene", metavar="G", help="gene to paint (default: the slide only)"
    )
    p.add_argument(
        "--route",
        choices=["omics", "decoder"],
        help="paint the gene-query score of this route instead of the prediction",
    )
    p.add_argument("--center-um", metavar="X,Y", help="camera centre (um, slide frame)")
    p.add_argument("--fov-um", type=float, metavar="W", help="field of view width (um)")
    p.add_argument(
        "--workspace",
        metavar="DIR",
        help="where unnamed outputs go (default: $NAPARI_SEAL_CACHE or the per-user "
        "cache folder)",
    )
    p.add_argument("--store", metavar="STORE.zarr", help="embedding store to fill")
    p.add_argument("--screenshot", metavar="OUT.png", help="save the canvas when ready")
    p.add_argument("--json", metavar="OUT.json", help="write timings when ready")
    p.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="exit once every tile in view is computed and painted",
    )
    add_batch_size(p, what="tiles", default=16)
    p.add_argument("--mpp", type=float, metavar="UM", help="slide pixel size override")
    add_common(p)
    p.set_defaults(func=run)
    return p


def _pair(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        msg = f"--center-um wants X,Y in micrometres (e.g. 2500,3100), got {text!r}"
        raise BadInputError(msg) from None
    return x, y


def _check(args: argparse.Namespace) -> None:
    if args.encoder and not args.head:
        msg = "--encoder needs --head HEAD (a probe saved by `napari-seal bench "
        msg += "--save-head`); or pass a SEAL run with --run"
        raise BadInputError(msg)
    if args.weights and not args.encoder:
        msg = "--weights goes with --encoder; a SEAL run (--run) carries its own"
        raise BadInputError(msg)
    if args.route and (args.encoder or args.head):
        msg = "--route scores with a SEAL run's omics encoder or decoder; use --run"
        raise BadInputError(msg)
    if args.route and not args.gene:
        msg = "--route needs --gene G (the gene to score)"
        raise BadInputError(msg)
    if args.fov_um is not None and not args.fov_um > 0:
        msg = f"--fov-um must be a positive width in micrometres, got {args.fov_um}"
        raise BadInputError(msg)
    if args.batch_size < 1:
        msg = f"--batch-size must be at least 1, got {args.batch_size}"
        raise BadInputError(msg)
    if not Path(args.source).exists():
        msg = f"{args.source} does not exist; pass a slide file or a sample folder"
        raise BadInputError(msg)


def _default_run() -> str:
    try:
        from napari_seal.models.shipped import shipped_run_path
    except ImportError:
        msg = "no model given and this install ships none; pass --run RUN_DIR or "
        msg += "--encoder NAME --head HEAD"
        raise BadInputError(msg) from None
    return str(shipped_run_path())


def run(args: argparse.Namespace) -> int:
    """Run ``napari-seal view``; return the exit code."""
    _check(args)
    if args.workspace:
        os.environ["NAPARI_SEAL_CACHE"] = str(Path(args.workspace).resolve())
    center = _pair(args.center_um) if args.center_um else None
    from napari_seal.commands._util import model_from_args, resolve_device, write_json
    from napari_seal.io.open import open_path

    device = resolve_device(args.device)
    if not (args.run or args.encoder):
        args.run = _default_run()
    obj = open_path(Path(args.source), mpp=args.mpp)
    model_label = f"run:{Path(args.run).resolve()}" if args.run else args.encoder
    make = None
    name = "slide"
    run_obj = None
    if args.gene:
        from napari_seal.predict.expression import expression_head

        head = expression_head(args.head or args.run)
        if args.route is None:
            head.index([args.gene])  # unknown gene: exit 2 before napari opens
        name = f"{args.gene} ({args.route} score)" if args.route else args.gene

        def make() -> tuple[Any, Any]:
            from napari_seal.embedding.on_demand import OnDemandEmbedder
            from napari_seal.predict.live import LiveOverlay
            from napari_seal.retrieval.score_head import ScoreHead

            model = run_obj if run_obj is not None else model_from_args(args, device)
            engine = OnDemandEmbedder(
                obj,
                model,
                args.store,
                batch_size=args.batch_size,
                device=device,
                mpp=args.mpp,
            )
            use = head
            if args.route:
                use = ScoreHead(engine.resolved.run, args.gene, args.route)
            # a run's reference bank gives the panel's reliability row its map
            return engine, LiveOverlay(
                engine.grid, use, use.genes[0] if args.route else args.gene,
                reference=getattr(engine.resolved, "run", None),
                reliability_gene=args.gene,
            )

        if args.route:  # check the gene against the run's panel up front
            from napari_seal.retrieval.scoring import load_run, parse_run_query

            run_obj = load_run(args.run)
            parse_run_query(run_obj, [args.gene])
        # the model's libraries are imported here, not in the viewer's worker thread,
        # where their import (seconds, holding the GIL) would stall the event loop
        import importlib

        for lib in ("timm", "peft"):
            with contextlib.suppress(ImportError):
                importlib.import_module(lib)
    from napari_seal._widgets.live_jobs import EncoderWithHead
    from napari_seal._widgets.view_app import run_view

    result = run_view(
        obj,
        make=make,
        name=name,
        center_um=center,
        fov_um=args.fov_um,
        exit_when_ready=args.exit_when_ready,
        screenshot=args.screenshot,
        # the Explore panel steers the overlay (a run, or the encoder and its head)
        panel={"model": args.run or EncoderWithHead(
            args.encoder, str(Path(args.head).resolve()),
            str(Path(args.weights).resolve()) if args.weights else None),
            "gene": args.gene, "route": args.route},
    )
    result["model"] = model_label
    result["gene"] = args.gene
    if args.json:
        write_json(result, args.json)
    return 0
