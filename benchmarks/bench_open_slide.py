"""Opening a 100k x 100k pyramidal slide in napari (DESIGN 6: < 1 s, <= 1.5 x 10k).

Generates (once, into ``--workdir``) a 100,000 x 100,000 and a 10,000 x 10,000 px
pyramidal JPEG TIFF at 0.25 um/px with :func:`napari_seal.io.slide.writer.
write_pyramidal_tiff`, streaming synthetic H&E-like tiles
(:func:`napari_seal.testing.synthetic_large_slide`). Then, in a shown napari viewer,
measures the time from the ``open_slide`` call to the first drawn canvas frame after::

    viewer.add_image(slide.as_dask_pyramid(), multiscale=True, rgb=True,
                     scale=(mpp, mpp))

(the draw event of the vispy canvas, with Qt events processed until it fires). Each
size is measured ``--repeats`` times, alternating sizes, after one warm-up open (Qt,
OpenGL and import costs are not counted). The files are in the OS page cache, as
after any first look at a slide. Prints the medians and their ratio.

Usage::

    xvfb-run -a python benchmarks/bench_open_slide.py [--workdir /tmp/napari-seal-bench]
        [--sizes 10000,100000] [--repeats 5] [--json OUT.json]

Without a display it starts a virtual one itself (pyvirtualdisplay + Xvfb).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

MPP = 0.25
TILE_PX = 512


def slide_path(workdir: Path, size: int) -> Path:
    return workdir / f"synthetic_{size}x{size}_jpeg.tif"


def ensure_slide(workdir: Path, size: int) -> Path:
    """Write the synthetic slide unless a complete one is already there."""
    from napari_seal.errors import SealError
    from napari_seal.io.slide.core import open_slide
    from napari_seal.io.slide.writer import write_pyramidal_tiff
    from napari_seal.testing import synthetic_large_slide

    path = slide_path(workdir, size)
    if path.exists():
        try:
            with open_slide(path) as slide:
                if slide.width_px == size and slide.mpp == MPP:
                    return path
        except SealError:
            pass
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"writing {path} ...", flush=True)
    t0 = time.perf_counter()
    source = synthetic_large_slide(size, size, mpp=MPP, tile_px=TILE_PX)
    write_pyramidal_tiff(path, source, mpp=MPP, tile_px=TILE_PX, quality=85)
    mb = path.stat().st_size / 2**20
    print(f"  wrote {mb:.0f} MiB in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def time_to_first_frame(viewer, path: Path) -> tuple[float, dict]:
    """Seconds from ``open_slide`` to the first canvas draw showing the image."""
    from qtpy.QtWidgets import QApplication

    from napari_seal.io.slide.core import open_slide

    app = QApplication.instance()
    viewer.layers.clear()
    for _ in range(20):
        app.processEvents()
    try:  # napari's opportunistic dask cache would serve chunks of the last open
        from napari.utils._dask_utils import _DASK_CACHE

        _DASK_CACHE.cache.clear()
    except (ImportError, AttributeError):
        pass
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    draws: list[tuple[float, bool]] = []

    def on_draw(event) -> None:
        layer = viewer.layers[0] if viewer.layers else None
        loaded = layer is not None and bool(getattr(layer, "loaded", True))
        draws.append((time.perf_counter(), loaded))

    canvas.events.draw.connect(on_draw)
    try:
        t0 = time.perf_counter()
        slide = open_slide(path)
        layer = viewer.add_image(
            slide.as_dask_pyramid(),
            multiscale=True,
            rgb=True,
            scale=(slide.mpp, slide.mpp),
            name=path.stem,
        )
        t_added = time.perf_counter()
        canvas.update()  # the frame after add_image (napari requests one as well)
        while time.perf_counter() - t0 < 60:
            app.processEvents()
            if any(t > t_added and ok for t, ok in draws):
                break
    finally:
        canvas.events.draw.disconnect(on_draw)
    after = [t for t, ok in draws if t > t_added and ok]
    if not after:
        msg = f"no frame was drawn within 60 s for {path}"
        raise RuntimeError(msg)
    first_any = next(t for t, ok in draws if ok)
    state = {
        "add_image_s": t_added - t0,
        "first_loaded_draw_s": first_any - t0,
        "levels": slide.n_levels,
        "level": int(layer.data_level),
    }
    return after[0] - t0, state


def canvas_shows_slide(viewer) -> float:
    """Fraction of canvas pixels that are not the black background."""
    import numpy as np

    shot = np.asarray(viewer.screenshot(canvas_only=True))[..., :3]
    return float((shot.max(axis=-1) > 40).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/napari-seal-bench"))
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    paths = {size: ensure_slide(args.workdir, size) for size in sizes}

    display = None
    if not os.environ.get("DISPLAY"):
        from pyvirtualdisplay import Display

        display = Display(visible=False, size=(1280, 1024))
        display.start()
    try:
        import napari

        viewer = napari.Viewer(show=True)
        viewer.window.resize(1200, 900)
        # warm-up: Qt, OpenGL shaders, imports (not counted)
        warm = ensure_slide(args.workdir, 2048)
        time_to_first_frame(viewer, warm)
        times: dict[int, list[float]] = {size: [] for size in sizes}
        info: dict[int, list[dict]] = {}
        for _ in range(args.repeats):
            for size in sizes:
                seconds, state = time_to_first_frame(viewer, paths[size])
                times[size].append(seconds)
                info.setdefault(size, []).append(state)
        shown = canvas_shows_slide(viewer)
        viewer.close()
    finally:
        if display is not None:
            display.stop()

    med = {size: statistics.median(ts) for size, ts in times.items()}
    for size in sizes:
        add = statistics.median(st["add_image_s"] for st in info[size])
        early = statistics.median(st["first_loaded_draw_s"] for st in info[size])
        first = info[size][0]
        print(
            f"{size:>7} x {size:<7} px: first frame after add_image "
            f"{med[size] * 1000:7.1f} ms (median of {len(times[size])}, min "
            f"{min(times[size]) * 1000:.1f}); open+add_image {add * 1000:.1f} ms; "
            f"first draw with the layer loaded {early * 1000:.1f} ms; "
            f"{first['levels']} levels, level shown {first['level']}"
        )
    print(f"canvas pixels showing the slide in the last frame: {shown:.0%}")
    result = {
        "sizes": sizes,
        "canvas_fraction_shown": shown,
        "median_s": {str(k): v for k, v in med.items()},
        "all_s": {str(k): v for k, v in times.items()},
    }
    if len(sizes) >= 2:
        ratio = med[sizes[-1]] / med[sizes[0]]
        result["ratio"] = ratio
        ok = med[sizes[-1]] < 1.0 and ratio <= 1.5
        print(
            f"ratio {sizes[-1]} / {sizes[0]}: {ratio:.2f} (goal < 1 s and <= 1.5): "
            f"{'PASS' if ok else 'FAIL'}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
