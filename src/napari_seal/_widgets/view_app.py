"""The viewer behind ``napari-seal view``: slide (+ spots), camera, live overlay.

:func:`run_view` opens napari with the slide (and the spots of a sample), centres
the camera, starts a :class:`~napari_seal._widgets._live.LiveOverlayView` and, with
``exit_when_ready``, waits until every tile in the field of view is computed and
painted, saves the canvas and returns the timings (``view --json``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_seal._widgets.live_jobs import start_early

__all__ = ["run_view"]


def _add_layers(viewer: Any, obj: Any) -> Any:
    from napari_seal.io.sample import SpatialSample
    from napari_seal.layers import sample_layers, slide_layer

    tuples = sample_layers(obj) if isinstance(obj, SpatialSample) else [
        slide_layer(obj)
    ]
    for data, kwargs, kind in tuples:
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return obj.slide if isinstance(obj, SpatialSample) else obj


def _set_camera(viewer: Any, slide: Any, center_um: tuple[float, float] | None,
                fov_um: float | None) -> None:
    from napari_seal._widgets._live import camera_of
    mpp = float(slide.require_mpp())
    w_um, h_um = slide.width_px * mpp, slide.height_px * mpp
    cx, cy = center_um if center_um is not None else (w_um / 2, h_um / 2)
    h, w = viewer.window._qt_viewer.canvas.size
    fov = float(fov_um) if fov_um else max(w_um, h_um * w / max(h, 1))
    camera_of(viewer).center = (cy, cx)
    camera_of(viewer).zoom = w / fov


def run_view(
    obj: Any,
    *,
    make: Callable[[], tuple[Any, Any]] | None,
    name: str = "predicted",
    center_um: tuple[float, float] | None = None,
    fov_um: float | None = None,
    exit_when_ready: bool = False,
    screenshot: str | Path | None = None,
    canvas_px: tuple[int, int] = (1000, 1000),
    timeout_s: float | None = None,
    ready_when: str = "complete",
    panel: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Show ``obj`` (slide or sample) with a live overlay; return the timings.

    Parameters
    ----------
    obj
        A ``Slide`` or ``SpatialSample``.
    make
        Called in a worker thread: ``(engine, overlay)`` (``None``: slide only).
        It starts before the window opens (loading the model and finding the
        tissue overlap napari's start-up: ~1.5 s on 2 cores) and never touches Qt.
    name
        The overlay layer's name.
    center_um, fov_um
        Camera centre ``(x, y)`` and field-of-view width in micrometres (default:
        the whole slide).
    exit_when_ready
        Close once the view is complete (without ``make``: once it is drawn).
    screenshot
        Save the canvas here when ready.
    canvas_px
        ``(width, height)`` of the canvas.
    timeout_s
        Give up waiting after this long (``timed_out`` in the result).
    ready_when
        ``"complete"`` (every visible tile exact) or ``"preview"`` (the whole view
        painted, preview blocks allowed: benchmarks of zoomed-out views).
    panel
        ``{"model": RUN_DIR, "gene": G, "route": R}``: dock the Explore panel, steering
        this overlay (another gene, another model), with these values.

    Returns
    -------
    dict
        ``visible_tiles``, ``tiles_computed``, ``first_paint_s``,
        ``visible_complete_s``, ``max_stall_ms``, ``store``, ``preview_s`` (the whole
        view painted, blocks or tiles), ``prepare_s`` (``[start, end]`` of ``make``
        from the slide shown: negative = before), ``stalls``, ``paint_ms``,
        ``command_s``, ``panel`` (whether the Explore panel was docked).
    """
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_seal._widgets._live import LiveOverlayView, StallProbe

    t_start = time.perf_counter()
    prepared: dict[str, float] = {}
    early = start_early(make, times=prepared) if make is not None else None
    viewer = napari.Viewer(title="napari-seal view", show=True)
    slide = _add_layers(viewer, obj)
    live = None
    if early is not None:
        live = LiveOverlayView(
            viewer, early.result, name=name, on_update=lambda u: on_update(u),
            on_finished=(lambda: QTimer.singleShot(0, finish)) if exit_when_ready
            else None,
            until_view_complete=exit_when_ready,
        )
    if panel is not None:
        from napari_seal._widgets._explore import ExploreWidget

        explore = ExploreWidget(viewer)
        viewer.window.add_dock_widget(explore, name="Explore", area="right")
        explore.compare_check.setChecked(not exit_when_ready)  # timings: the view only
        if live is not None:
            explore.adopt(live, model=panel["model"], gene=panel.get("gene"),
                          route=panel.get("route"))
        elif panel.get("model"):
            explore.offer_model(panel["model"])
    app = QApplication.instance()
    # room for the docks beside a canvas of the asked size (they would squeeze it)
    window = viewer.window._qt_window
    extra_w = 900 if panel is not None else 400
    window.resize(int(canvas_px[0]) + extra_w, int(canvas_px[1]) + 200)
    app.processEvents()
    viewer.window._qt_viewer.canvas.size = (int(canvas_px[1]), int(canvas_px[0]))
    app.processEvents()  # the window's layout settles the canvas size
    _set_camera(viewer, slide, center_um, fov_um)
    app.processEvents()
    probe = StallProbe()
    probe.start()
    t0 = time.perf_counter()  # the slide is shown
    result: dict[str, Any] = {
        "visible_tiles": 0, "tiles_computed": 0, "first_paint_s": None,
        "preview_s": None, "visible_complete_s": None, "max_stall_ms": 0.0,
        "store": None, "open_s": t0 - t_start, "timed_out": False,
        "panel": panel is not None,
    }
    finished = {"done": False}

    def finish() -> None:
        if finished["done"]:
            return
        finished["done"] = True
        if screenshot is not None:
            from napari_seal.io.atomic import ensure_writable_dir

            out = Path(screenshot)
            ensure_writable_dir(out.parent)
            viewer.screenshot(str(out), canvas_only=True)
        probe.stop()
        result["max_stall_ms"] = round(probe.worst_ms, 1)
        result["stalls"] = probe.stalls[:20]
        result["paint_ms"] = round(live.paint_ms, 1) if live is not None else 0.0
        if exit_when_ready:
            if live is not None:
                live.cancel()
            viewer.close()
            app.quit()

    def on_update(update: Any) -> None:
        now = time.perf_counter() - t0
        result["visible_tiles"] = update.view_total
        result["tiles_computed"] = update.tiles_computed
        result["store"] = str(live.engine.store_path)
        result["worker"] = {k: round(v, 3) for k, v in live.engine.timings.items()}
        if "end" in prepared:  # model + tissue ready, from the slide shown
            result["prepare_s"] = [round(prepared[k] - t0, 3) for k in ("start", "end")]
        if result["first_paint_s"] is None and update.view_done:
            result["first_paint_s"] = round(now, 3)
        if result["preview_s"] is None and update.covered:
            result["preview_s"] = round(now, 3)
            if exit_when_ready and ready_when == "preview":
                QTimer.singleShot(0, finish)
        if update.view_complete and result["visible_complete_s"] is None:
            result["visible_complete_s"] = round(now, 3)
            if exit_when_ready:
                QTimer.singleShot(0, finish)

    if make is not None:
        live.start()
    elif exit_when_ready:
        QTimer.singleShot(50, finish)
    if exit_when_ready:
        if timeout_s is not None:
            def give_up() -> None:
                result["timed_out"] = True
                finish()

            QTimer.singleShot(int(timeout_s * 1000), give_up)
        app.exec()
    else:
        napari.run()
        finish()
    result["command_s"] = round(time.perf_counter() - t_start, 3)
    if live is not None and live.job.error is not None:
        raise live.job.error
    return result
