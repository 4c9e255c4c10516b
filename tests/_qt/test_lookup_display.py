"""Image -> expression in the Gene query dock: an Alt+click on the canvas shows the
nearest reference spots ringed on their layer and their expression as bars."""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtWidgets import QApplication
from test_widgets_jobs import _load, _save, wait_for_job

from napari_seal._widgets._live import camera_of


def _spots_layer(viewer):
    return next(layer for layer in viewer.layers
                if layer.metadata.get("napari_seal", {}).get("kind") == "spots")


def _alt_click_at(viewer, world_rc) -> None:
    """Centre the camera on ``world_rc`` and Alt+click the canvas centre (the real
    vispy press/release path napari's own tests use)."""
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    camera_of(viewer).center = tuple(world_rc)
    camera_of(viewer).zoom = 2.0
    w, h = canvas.size
    canvas.events.mouse_press(pos=(w // 2, h // 2), modifiers=("Alt",), button=0)
    canvas.events.mouse_release(pos=(w // 2, h // 2), modifiers=("Alt",), button=0)


def test_alt_click_rings_nearest_spots_and_draws_their_expression(
    make_napari_viewer, tiny_run
):
    from napari_seal._widgets._query import QueryWidget

    viewer = make_napari_viewer(show=True)
    _load(viewer)
    widget = QueryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Gene query")
    widget.offer_run(tiny_run)
    spots = _spots_layer(viewer)
    target = len(spots.data) // 2
    clicked_id = str(spots.features["spot_id"][target])
    _alt_click_at(viewer, spots.data[target])
    assert widget.job is not None, "the Alt+click did not start a lookup"
    wait_for_job(widget, 300)
    assert widget.job.error is None, widget.job.error
    result = widget.lookup_result
    neighbours = result["neighbours"]
    assert len(neighbours) == 10
    # the clicked point is a reference spot's own centre: its patch is (to a fraction
    # of a pixel) the spot's patch, so the spot itself is the nearest
    assert neighbours[0]["spot_id"] == clicked_id
    assert neighbours[0]["similarity"] > 0.99

    # rings: one per neighbour, where the spots layer draws those spots, ranked
    ring = viewer.layers["nearest spots"]
    ids = list(spots.features["spot_id"].astype(str))
    want = np.asarray([spots.data[ids.index(n["spot_id"])] for n in neighbours])
    np.testing.assert_allclose(np.asarray(ring.data), want)
    assert list(ring.features["rank"]) == list(range(1, 11))
    assert list(ring.features["spot_id"]) == [n["spot_id"] for n in neighbours]

    # bars: the most enriched genes of the 10 spots, their means and the reference's
    enriched = result["expression"]["enriched_genes"][:8]
    assert [r[0] for r in widget.bars.rows] == [g["gene"] for g in enriched]
    np.testing.assert_allclose([r[1] for r in widget.bars.rows],
                               [g["mean"] for g in enriched])
    np.testing.assert_allclose([r[2] for r in widget.bars.rows],
                               [g["reference_mean"] for g in enriched])
    assert widget.bars.isVisible()
    assert widget.status.text().startswith("10 nearest spots")
    assert enriched[0]["gene"] in widget.status.text()

    # pixels: the magenta ring is drawn around the clicked spot (canvas centre)
    camera_of(viewer).center = tuple(spots.data[target])
    shot = viewer.screenshot(canvas_only=True, flash=False)
    img = np.asarray(shot)[..., :3].astype(int)
    magenta = (img[..., 0] > 180) & (img[..., 2] > 180) & (img[..., 1] < 90)
    h, w = magenta.shape
    radius_px = 0.5 * ring.size[0] * camera_of(viewer).zoom
    rows, cols = np.nonzero(magenta)
    dist = np.hypot(rows - h / 2, cols - w / 2)
    near = np.abs(dist - radius_px) < 0.25 * radius_px + 3
    assert near.sum() > 50, (near.sum(), magenta.sum(), radius_px)
    viewer.layers.remove("nearest spots")
    shot = viewer.screenshot(canvas_only=True, flash=False)
    img2 = np.asarray(shot)[..., :3].astype(int)
    magenta2 = (img2[..., 0] > 180) & (img2[..., 2] > 180) & (img2[..., 1] < 90)
    assert magenta2.sum() < 0.2 * magenta.sum()

    # a docs picture with the shipped model: the dock's bars beside the ringed spots
    from napari_seal.models.shipped import shipped_run_path

    widget.offer_run(shipped_run_path())
    widget.lookup_at(tuple(np.asarray(spots.data[target])[::-1]
                           / viewer.layers[0].scale[-1]))
    wait_for_job(widget, 300)
    assert widget.job.error is None, widget.job.error
    viewer.reset_view()
    camera_of(viewer).zoom *= 1.6
    camera_of(viewer).center = tuple(spots.data[target])
    end = time.monotonic() + 3.0  # let the multiscale slide's tiles load and draw
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    _save(viewer, "widget_lookup.png")
