"""``napari-seal view`` on a large slide of real her2st tissue (issue 12 budgets).

Generates (once, into ``--workdir``) a pyramidal JPEG TIFF tiled from the bundled
her2st section (``--copies N`` x N copies of its level 0, alternately mirrored, at
its pixel size) with :func:`napari_seal.io.slide.writer.write_pyramidal_tiff`, then:

1. runs ``napari-seal view SLIDE --gene ERBB2 --fov-um 1500 --exit-when-ready --json``
   (the shipped model, a fresh workspace: nothing embedded) in a subprocess and prints
   the visible-overlay complete time (goal < 5 s), tiles computed / visible (goal
   <= 3), the worst event-loop stall (goal < 100 ms) and the whole command time
   (goal < 90 s);
2. zoomed out to the whole slide, in-process (the same ``run_view``, ready at the
   first complete preview of the view): the first preview time (goal < 15 s).

Usage::

    xvfb-run -a -s "-screen 0 1600x1200x24" python benchmarks/bench_view.py
        [--workdir /tmp/napari-seal-bench-view] [--copies 4] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def ensure_slide(workdir: Path, copies: int) -> tuple[Path, float, tuple[int, int]]:
    """Write the tiled slide unless it is there; return (path, mpp, (w, h))."""
    import dask.array as da
    import numpy as np

    from napari_seal.embedding.inputs import resolve_slide
    from napari_seal.io.hest import bundled_sample_path
    from napari_seal.io.slide.core import open_slide
    from napari_seal.io.slide.writer import write_pyramidal_tiff

    section = resolve_slide(bundled_sample_path())
    mpp = float(section.mpp)
    path = workdir / f"her2st_tiled_{copies}x{copies}.tif"
    if path.exists():
        s = open_slide(path)
        return path, mpp, (s.width_px, s.height_px)
    workdir.mkdir(parents=True, exist_ok=True)
    img = np.asarray(section.levels[0])
    # four dask arrays, each block of the mosaic one of them (dask copies a numpy
    # array into its chunks: one from_array per block held copies x copies sections)
    flips = [da.from_array(np.ascontiguousarray(f), chunks=(2048, 2048, 3))
             for f in (img, img[:, ::-1], img[::-1], img[::-1, ::-1])]
    rows = [[flips[(r % 2) * 2 + (c % 2)] for c in range(copies)]
            for r in range(copies)]
    mosaic = da.block([[[b] for b in row] for row in rows])
    print(f"writing {path} ({mosaic.shape[1]} x {mosaic.shape[0]} px) ...", flush=True)
    t0 = time.perf_counter()
    write_pyramidal_tiff(path, mosaic, mpp=mpp, tile_px=512, quality=85)
    print(f"  wrote {path.stat().st_size / 2**20:.0f} MiB in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return path, mpp, (int(mosaic.shape[1]), int(mosaic.shape[0]))


def run_fov(slide: Path, centre: tuple[float, float], workspace: Path) -> dict:
    out = workspace / "view.json"
    env = {**os.environ, "NAPARI_SEAL_CACHE": str(workspace)}
    cmd = [sys.executable, "-m", "napari_seal", "view", str(slide), "--gene", "ERBB2",
           "--fov-um", "1500", "--center-um", f"{centre[0]:.0f},{centre[1]:.0f}",
           "--exit-when-ready", "--json", str(out),
           "--screenshot", str(workspace / "view.png")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"view failed ({proc.returncode}): {proc.stderr[-2000:]}")
    d = json.loads(out.read_text())
    d["wall_s"] = wall
    return d


def run_whole(slide: Path, workspace: Path) -> dict:
    os.environ["NAPARI_SEAL_CACHE"] = str(workspace)
    import importlib

    for lib in ("timm", "peft"):
        importlib.import_module(lib)
    from napari_seal._widgets.view_app import run_view
    from napari_seal.embedding.on_demand import OnDemandEmbedder
    from napari_seal.io.open import open_path
    from napari_seal.models.shipped import shipped_run_path
    from napari_seal.predict.expression import expression_head
    from napari_seal.predict.live import LiveOverlay

    obj = open_path(slide)
    run = str(shipped_run_path())
    head = expression_head(run)

    def make():
        engine = OnDemandEmbedder(obj, run, None, batch_size=16, device="cpu")
        return engine, LiveOverlay(engine.grid, head, "ERBB2")

    return run_view(obj, make=make, name="ERBB2", exit_when_ready=True,
                    ready_when="preview", timeout_s=300,
                    screenshot=workspace / "whole.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir())
                                             / "napari-seal-bench-view"))
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--json")
    args = ap.parse_args()
    slide, mpp, (w, h) = ensure_slide(Path(args.workdir), args.copies)
    # a tissue-rich point of the section, in the copy nearest the slide centre
    sec_w, sec_h = w // args.copies, h // args.copies
    cx = (args.copies // 2) * sec_w * mpp + 0.5 * sec_w * mpp
    cy = (args.copies // 2) * sec_h * mpp + 0.5 * sec_h * mpp
    ws = Path(tempfile.mkdtemp(prefix="bench-view-"))
    fov = run_fov(slide, (cx, cy), ws / "fov")
    whole = run_whole(slide, ws / "whole")
    ratio = fov["tiles_computed"] / max(1, fov["visible_tiles"])
    report = {
        "slide_px": [w, h], "mpp": mpp, "fov": fov, "whole": whole,
        "tiles_computed_per_visible": ratio,
    }
    print(f"slide {w} x {h} px at {mpp:.3f} um/px")
    print(f"fov 1500 um: visible overlay complete {fov['visible_complete_s']:.2f} s "
          "(goal < 5)")
    print(f"  tiles computed / visible {fov['tiles_computed']} / "
          f"{fov['visible_tiles']} = {ratio:.2f} (goal <= 3)")
    print(f"  worst stall {fov['max_stall_ms']:.0f} ms (goal < 100)")
    print(f"  whole command {fov['wall_s']:.1f} s (goal < 90)")
    print(f"whole slide: first preview {whole['preview_s']} s (goal < 15), "
          f"{whole['visible_tiles']} tissue tiles in view, "
          f"{whole['tiles_computed']} computed, worst stall {whole['max_stall_ms']:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
