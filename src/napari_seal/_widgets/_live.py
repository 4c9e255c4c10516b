"""The live overlay in napari: what the camera looks at is embedded and painted first.

:class:`LiveOverlayView` builds an :class:`~napari_seal.embedding.on_demand.
OnDemandEmbedder` and a :class:`~napari_seal.predict.live.LiveOverlay` in a thread
worker (model loading, tissue mask and the model itself never run on the GUI thread),
adds a one-pixel-per-tile image layer in micrometres, repaints it from each batch's
snapshot and sends every camera change (pan, zoom) to the embedder, which takes the
new view at its next batch. Closing the viewer (or removing the layer) cancels it.
:class:`StallProbe` measures the event loop's lateness.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer

from napari_seal._widgets._common import Job
from napari_seal._widgets._reliability import LIVE_UNCERTAINTY, paint_uncertainty
from napari_seal._widgets._stall import StallProbe
from napari_seal.predict.reliability import DEFAULT_MAX_UNCERTAINTY

__all__ = ["LiveOverlayView", "StallProbe", "camera_of", "camera_rect_um", "unproxied"]

MIN_REPAINT_S = 0.25


def unproxied(viewer: Any) -> Any:
    """The viewer itself: a dock made by napari's plugin manager gets a proxy that
    refuses the canvas (``window._qt_viewer``), whose size the live view needs."""
    return getattr(viewer, "__wrapped__", viewer)


def camera_of(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def camera_rect_um(viewer: Any) -> tuple[float, float, float, float]:
    """The canvas's field of view ``(x0, y0, x1, y1)`` in world micrometres."""
    h, w = unproxied(viewer).window._qt_viewer.canvas.size
    cy, cx = camera_of(viewer).center[-2:]
    zoom = float(camera_of(viewer).zoom) or 1.0
    hw, hh = w / 2 / zoom, h / 2 / zoom
    return (cx - hw, cy - hh, cx + hw, cy + hh)


class LiveOverlayView(QObject):
    """Paint a lazily computed overlay where the camera looks.

    Parameters
    ----------
    viewer
        The napari viewer.
    make
        Called in the worker: returns ``(engine, overlay)``
        (:class:`~napari_seal.embedding.on_demand.OnDemandEmbedder`,
        :class:`~napari_seal.predict.live.LiveOverlay`).
    name
        Layer name (`` (preview)`` is appended while blocks stand for tiles).
    colormap, opacity
        Layer display.
    on_update
        Called in the GUI thread after each repaint with the
        :class:`~napari_seal.predict.live.OverlayUpdate`.
    on_finished
        Called in the GUI thread when the worker ends (done, cancelled or failed).
    until_view_complete
        Stop the worker once the view is complete (for ``view --exit-when-ready``).
    """

    def __init__(
        self,
        viewer: Any,
        make: Callable[[], tuple[Any, Any]],
        *,
        name: str = "predicted",
        colormap: str = "magma",
        opacity: float = 0.75,
        on_update: Callable[[Any], None] | None = None,
        on_finished: Callable[[], None] | None = None,
        until_view_complete: bool = False,
    ) -> None:
        viewer = unproxied(viewer)
        super().__init__(viewer.window._qt_viewer)  # deleted with the viewer
        self.viewer = viewer
        self.name = name
        self.colormap = colormap
        self.opacity = opacity
        self.engine: Any = None
        self.overlay: Any = None
        self.last: Any = None
        self.n_updates = 0
        self.paint_ms = 0.0  # the slowest repaint on the GUI thread
        # the reliability map (set_reliability): hide above, shown as a layer
        self.max_uncertainty: float | None = None
        self.show_uncertainty = False
        self.hidden = 0  # tiles hidden as unreliable in the last repaint
        self._pending: Any = None
        self._last_paint = 0.0
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._paint_pending)
        # the layer exists before the model is ready (adding one is the slow part)
        import numpy as np

        self.layer = viewer.add_image(
            np.full((1, 1), np.nan, np.float32), name=name, colormap=colormap,
            opacity=opacity, contrast_limits=(0.0, 1.0), blending="translucent",
        )
        layers = viewer.layers
        if len(layers) > 2:  # just above the slide: spots stay visible on top
            layers.move(layers.index(self.layer), 1)
        self._listeners = [on_update] if on_update is not None else []
        self._until = until_view_complete
        # open-ended (it idles until the view moves): no activity bar, whose
        # animation would cost the encoder most of a core (_activity)
        self.job = Job(self._run, make, description=f"{name}: computing the view",
                       on_event=self._event, on_finished=on_finished, activity=False)
        # on deletion (viewer closed) this wrapper may be gone: stop via a closure
        self._stoppers: list[Any] = [self.job]
        stoppers = self._stoppers
        self.destroyed.connect(lambda *_: [s.cancel() for s in stoppers])

    def start(self) -> LiveOverlayView:
        """Start the worker."""
        self.job.start()
        return self

    def _run(self, make: Callable[[], tuple[Any, Any]]):
        from napari_seal.predict.live import iter_live_overlay

        engine, overlay = make()
        self.engine = engine
        self._stoppers.append(engine)
        yield ("ready", overlay)
        return (yield from iter_live_overlay(engine, overlay,
                                             until_view_complete=self._until))

    def _event(self, event: Any) -> None:
        if event is None or self.viewer.window is None:
            return
        if isinstance(event, tuple) and event[0] == "ready":
            self._ready(event[1])
            return
        # repaint at most every MIN_REPAINT_S (each canvas draw costs CPU the model
        # needs); the first and the completing batch are painted at once
        self._pending = event
        wait = self._last_paint + MIN_REPAINT_S - time.perf_counter()
        if self.n_updates and wait > 0 and not event.view_complete:
            if not self._timer.isActive():
                self._timer.start(int(1000 * wait) + 1)
            return
        self._paint_pending()

    def _paint_pending(self) -> None:
        event, self._pending = self._pending, None
        if event is None or self.viewer.window is None:
            return
        self._timer.stop()
        t = time.perf_counter()
        self.last = event
        self.layer.data, self.hidden = event.shown(self.max_uncertainty)
        unc = event.uncertainty if self.show_uncertainty else None
        paint_uncertainty(self.viewer, unc, name=LIVE_UNCERTAINTY,
                          scale=self.layer.scale, translate=self.layer.translate,
                          gene=self.overlay.reliability_gene or "", max_sd=(
                              self.max_uncertainty or DEFAULT_MAX_UNCERTAINTY))
        if tuple(self.layer.contrast_limits) != tuple(event.contrast_limits):
            self.layer.contrast_limits = event.contrast_limits
        name = self.name + (" (preview)" if event.preview else "")
        if self.layer.name != name:
            self.layer.name = name
        self.n_updates += 1
        self._last_paint = time.perf_counter()
        self.paint_ms = max(self.paint_ms, 1000 * (self._last_paint - t))
        for listener in list(self._listeners):
            listener(event)

    def _ready(self, overlay: Any) -> None:
        self.overlay = overlay
        layer = self.layer
        layer.metadata = {"napari_seal": {"kind": "live_overlay", "gene": overlay.gene,
                                          "store": str(self.engine.store_path)}}
        layer.scale = overlay.scale_um
        layer.translate = overlay.translate_um
        layer.data = overlay.image.copy()
        camera_of(self.viewer).events.center.connect(self.camera_changed)
        camera_of(self.viewer).events.zoom.connect(self.camera_changed)
        self.viewer.layers.events.removed.connect(self._layer_removed)
        self.camera_changed()

    def add_update_listener(self, listener: Callable[[Any], None], owner: Any = None
                            ) -> None:
        """Also call ``listener(update)`` after each repaint (GUI thread), until
        ``owner`` (a QObject) is destroyed."""
        self._listeners.append(listener)
        if owner is not None:
            listeners = self._listeners
            owner.destroyed.connect(lambda *_: listener in listeners
                                    and listeners.remove(listener))

    def set_gene(self, gene: str, *, name: str | None = None) -> None:
        """Paint ``gene`` instead (no encoder work: the worker repaints from the
        hidden layer it keeps, within its next idle step, ~0.1 s). Unknown genes raise
        the head's error here."""
        if self.overlay is None:
            msg = "the overlay is still starting; try again in a moment"
            raise RuntimeError(msg)
        self.overlay.request_gene(gene)
        self.name = name or gene
        meta = self.layer.metadata.get("napari_seal", {})
        self.layer.metadata = {"napari_seal": {**meta, "gene": gene}}

    def set_reliability(self, max_uncertainty: float | None, *, show: bool) -> None:
        """Hide the tiles whose uncertainty is above ``max_uncertainty`` (None: hide
        none) and show the map as its own layer or not; repainted at once, on this
        thread, from the last update (no worker round trip)."""
        self.max_uncertainty, self.show_uncertainty = max_uncertainty, bool(show)
        if self.last is not None and self._pending is None:
            self._pending = self.last
            self._paint_pending()

    @property
    def running(self) -> bool:
        """Whether the worker still runs (it stops on cancel, error or completion)."""
        return bool(self.job.running)

    def camera_changed(self, *_args: Any) -> None:
        """Send the camera's field of view to the embedder (O(1), GUI thread)."""
        if self.engine is not None and self.viewer.window is not None:
            self.engine.set_view(*camera_rect_um(self.viewer))

    def _layer_removed(self, event: Any) -> None:
        if getattr(event, "value", None) is self.layer:
            self.cancel()

    def cancel(self, *_args: Any) -> None:
        """Stop computing at the next batch (finished tiles stay in the store)."""
        if self.engine is not None:
            self.engine.cancel()
        self.job.cancel()
