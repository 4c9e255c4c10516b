"""The Explore dock: a fresh napari to predicted ERBB2 on the bundled sample in three
user actions, no path typed; another gene repaints from what is computed; docks share
one state."""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication
from test_live_view import _until
from test_widgets_jobs import _save

from napari_seal._widgets._explore import ExploreWidget


def _wait_idle(live, quiet_s=1.5):
    """Until the worker has computed nothing for ``quiet_s`` (the margin around the
    view is computed after the view)."""
    seen = {"n": -1, "since": time.monotonic()}

    def idle():
        n = live.engine.tiles_computed
        if n != seen["n"]:
            seen.update(n=n, since=time.monotonic())
        return time.monotonic() - seen["since"] > quiet_s

    _until(idle, 120)


def _type(qtbot, edit, text):
    edit.clear()
    qtbot.keyClicks(edit, text)
    qtbot.keyClick(edit, Qt.Key.Key_Return)


def _tissue_change(before, after):
    """Per pixel |after - before| summed over RGB (a dock's relayout may change the
    canvas by a pixel: the common part)."""
    h, w = min(before.shape[0], after.shape[0]), min(before.shape[1], after.shape[1])
    before, after = before[:h, :w], after[:h, :w]
    return np.abs(after[..., :3].astype(int) - before[..., :3].astype(int)).sum(-1)


def test_three_actions_to_predicted_erbb2_then_instant_gene_switch(
    make_napari_viewer, qtbot, monkeypatch
):
    from napari_seal.io.hest import bundled_sample_path
    from napari_seal.io.workspace import workspace_root
    from napari_seal.models.shipped import shipped_run_path
    from napari_seal.predict.expression import (
        expression_head,
        expression_image,
        open_store,
    )
    from napari_seal.state import state_for

    errors = []
    monkeypatch.setattr("napari_seal._widgets._common.show_error", errors.append)
    viewer = make_napari_viewer(show=True)
    # wide enough that the whole section is in view beside the dock: the view is then
    # all the tissue, and nothing is computed after it (a deterministic comparison)
    viewer.window._qt_window.resize(2000, 1000)
    actions = 0
    viewer.open_sample("napari-seal", "her2st")  # File > Open Sample > her2st
    actions += 1
    source = viewer.layers[0].metadata["napari_seal"]["source"]
    assert source == str(bundled_sample_path())
    _, widget = viewer.window.add_plugin_dock_widget("napari-seal", "Explore")
    actions += 1  # Plugins > napari-seal > Explore
    assert widget.slide_label.text() == viewer.layers[0].name
    assert "seal-default-her2st" in widget.model_info.text()
    assert "held out" in widget.model_info.text()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        QApplication.processEvents()
    before = np.asarray(viewer.screenshot(canvas_only=True, flash=False))
    _type(qtbot, widget.gene_edit, "erbb2")  # lower case: matched to ERBB2
    actions += 1
    assert actions == 3, errors
    assert not errors, errors
    _until(lambda: (widget.live is not None and widget.live.last is not None
                    and widget.live.last.view_complete)
           or (widget.live is not None and widget.live.job.error is not None),
           timeout_s=float(__import__("os").environ.get("T", 300)))
    assert widget.live.job.error is None
    live, first = widget.live, widget.live.last
    layer = viewer.layers["ERBB2"]
    assert first.view_total == len(live.engine.grid.tile_ids)  # the whole section
    assert np.isfinite(np.asarray(layer.data)).sum() >= first.view_total

    # written through into the workspace store, never beside the inputs: and the
    # overlay is exactly the batch prediction from that store
    state = state_for(viewer)
    store_path = live.engine.store_path
    assert state.store == str(store_path)
    assert str(store_path).startswith(str(workspace_root()))
    store = open_store(store_path)
    head = expression_head(shipped_run_path())
    batch, _, _ = expression_image(store, head, "ERBB2")
    shown = np.asarray(layer.data)
    # tiles computed exactly (beyond the view a pixel may still hold its block's
    # preview value until the tile itself is computed)
    overlay = live.overlay
    exact = np.zeros(shown.shape, bool)
    exact[overlay.rows[overlay.exact], overlay.cols[overlay.exact]] = True
    both = exact & np.isfinite(shown) & np.isfinite(np.asarray(batch))
    assert both.sum() >= first.view_total
    np.testing.assert_allclose(shown[both], np.asarray(batch)[both],
                               rtol=1e-4, atol=1e-5)

    # measured vs predicted at the sample's spots, once the view is complete
    _until(lambda: widget.compare is not None or (
        widget._compare_job is not None and not widget._compare_job.running), 120)
    assert widget._compare_job.error is None, widget._compare_job.error
    from napari_seal.io.hest import load_sample
    from napari_seal.predict.spots import compare_at_spots, spot_predictions

    sample = load_sample(bundled_sample_path())
    predicted = spot_predictions(sample, store_path, shipped_run_path(),
                                 genes=["ERBB2"])
    want = compare_at_spots(sample, predicted, "ERBB2")
    n_pred = int(np.isfinite(np.asarray(predicted.X, dtype=float)).sum())
    assert widget.compare["n_spots"] == n_pred >= 0.9 * sample.n_spots
    assert widget.compare["r"] == want
    assert np.isfinite(want)
    assert f"r = {want:.2f}" in widget.compare_label.text()

    # rendered: the tissue changed colour under the overlay
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        QApplication.processEvents()
    after = np.asarray(viewer.screenshot(canvas_only=True, flash=False))
    assert (_tissue_change(before, after) > 60).mean() > 0.05
    _save(viewer, "widget_explore.png")

    # another gene: the same worker repaints from the kept hidden layer, no encoder work
    _wait_idle(live)
    computed = live.engine.tiles_computed
    t0 = time.perf_counter()
    _type(qtbot, widget.gene_edit, "GRB7")
    _until(lambda: layer.name == "GRB7", 10)
    switch_s = time.perf_counter() - t0
    assert widget.live is live
    assert switch_s < 3.0, switch_s
    assert live.engine.tiles_computed == computed
    grb7, _, _ = expression_image(store, head, "GRB7")
    shown = np.asarray(layer.data)
    np.testing.assert_allclose(shown[both], np.asarray(grb7)[both],
                               rtol=1e-4, atol=1e-5)
    assert state.gene == "GRB7"
    assert state.route == "expression"

    # a typo: a message with the nearest genes, the overlay stays
    _type(qtbot, widget.gene_edit, "ERBB22")
    assert errors
    assert "ERBB2" in errors[-1]
    assert "nearest" in errors[-1]
    assert layer.name == "GRB7"

    # a dock opened later takes the model and the store from the shared state
    from napari_seal._widgets._query import QueryWidget

    query = QueryWidget(viewer)
    assert query.run_edit.text() == str(shipped_run_path())
    assert query.store_edit.text() == str(store_path)
    print(f"explore: {first.view_total} tiles in view, switch {1000 * switch_s:.0f} ms")


def test_panel_steers_a_live_view_started_elsewhere(make_napari_viewer, qtbot,
                                                     tiny_run):
    """``napari-seal view`` docks the panel on its own overlay (ExploreWidget.adopt)."""
    from napari_seal._widgets._explore import ExploreWidget
    from napari_seal._widgets._live import LiveOverlayView
    from napari_seal.training.runs import load_run

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-seal", "her2st")
    source = viewer.layers[0].metadata["napari_seal"]["source"]
    run = load_run(tiny_run)
    genes = list(run.panel.genes)

    def make():
        from napari_seal.embedding.on_demand import OnDemandEmbedder
        from napari_seal.predict.expression import expression_head
        from napari_seal.predict.live import LiveOverlay

        engine = OnDemandEmbedder(source, run, None, batch_size=8)
        return engine, LiveOverlay(engine.grid, expression_head(run), genes[0])

    live = LiveOverlayView(viewer, make, name=genes[0]).start()
    panel = ExploreWidget(viewer)
    viewer.window.add_dock_widget(panel, name="Explore")
    panel.adopt(live, model=str(tiny_run), gene=genes[0], route=None)
    assert panel.model_path() == str(tiny_run)
    assert panel.gene_edit.text() == genes[0]
    _until(lambda: live.last is not None and live.last.view_complete
           or live.job.error is not None)
    assert live.job.error is None
    assert panel.status.text().startswith(f"{genes[0]}: ")
    _wait_idle(live)
    computed = live.engine.tiles_computed
    _type(qtbot, panel.gene_edit, genes[1])
    _until(lambda: live.layer.name == genes[1], 10)
    assert panel.live is live
    assert live.engine.tiles_computed == computed


def test_model_prepared_while_typing_and_unreliable_tiles_hidden(
    make_napari_viewer, qtbot, tiny_run
):
    """The panel loads the model and finds the tissue before a gene is typed (the
    overlay starts from that), and its reliability row hides exactly the tiles whose
    uncertainty is above the threshold, in the rendered canvas too."""
    from napari_seal._widgets._explore import ExploreWidget
    from napari_seal._widgets._reliability import LIVE_UNCERTAINTY, UNCERTAINTY

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open_sample("napari-seal", "her2st")
    panel = ExploreWidget(viewer)
    viewer.window.add_dock_widget(panel, name="Explore")
    panel.offer_model(str(tiny_run))
    _until(lambda: panel._prepared is not None
           and panel._prepared[0][1] == str(tiny_run)
           and panel._prepared[1].done(), 120)
    run, engine = panel._prepared[1].result()
    assert panel.reliability.show_check.isEnabled()  # the run has a reference bank
    gene = run.panel.genes[0]
    _type(qtbot, panel.gene_edit, gene)
    assert panel._prepared is None  # taken by the overlay
    live = panel.live
    _until(lambda: live.last is not None and live.last.view_complete
           or live.job.error is not None, 120)
    assert live.job.error is None
    assert live.engine is engine  # the prepared one
    _wait_idle(live)
    last = live.last
    assert last.uncertainty is not None
    assert live.hidden == 0
    painted = np.isfinite(last.image)
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        QApplication.processEvents()
    before = np.asarray(viewer.screenshot(canvas_only=True, flash=False))

    thr = float(np.nanpercentile(last.uncertainty[painted], 60))
    panel.reliability.max_spin.setValue(thr)
    thr = panel.reliability.max_spin.value()  # rounded to 2 decimals
    panel.reliability.hide_check.setChecked(True)  # repainted at once, GUI thread
    above = painted & (live.last.uncertainty > thr)
    shown = np.asarray(live.layer.data)
    assert live.hidden == int(above.sum()) > 0
    assert np.isnan(shown[above]).all()
    np.testing.assert_array_equal(shown[painted & ~above], last.image[painted & ~above])
    assert f"{live.hidden} unreliable hidden" in panel.status.text()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        QApplication.processEvents()
    after = np.asarray(viewer.screenshot(canvas_only=True, flash=False))
    changed = (_tissue_change(before, after) > 30).mean()
    assert changed > 0.005, changed  # the hidden tiles show the bare slide now
    _save(viewer, "widget_explore_reliability.png")

    viewer.add_image(np.zeros((2, 2), np.float32), name=UNCERTAINTY)  # Expression's
    panel.reliability.show_check.setChecked(True)
    assert LIVE_UNCERTAINTY in viewer.layers
    np.testing.assert_array_equal(np.asarray(viewer.layers[LIVE_UNCERTAINTY].data),
                                  live.last.uncertainty)
    panel.reliability.hide_check.setChecked(False)
    panel.reliability.show_check.setChecked(False)
    assert LIVE_UNCERTAINTY not in viewer.layers
    assert live.hidden == 0
    assert UNCERTAINTY in viewer.layers  # another dock's map is left alone
    np.testing.assert_array_equal(np.asarray(live.layer.data), live.last.image)


def _color_head(folder):
    """A ridge head fitted by `bench` on the bundled section (colour statistics)."""
    from napari_seal.evaluate.benchmark import bench
    from napari_seal.io.hest import bundled_sample_path

    head = folder / "head.safetensors"
    bench([bundled_sample_path()], [bundled_sample_path()], encoder="color-stats",
          targets="normalized", save_head=head, device="cpu")
    return head


def test_encoder_with_a_saved_head_in_the_panel(make_napari_viewer, qtbot, tmp_path,
                                                monkeypatch):
    """An encoder with a head saved by `bench --save-head` is a model of the panel:
    predicted expression painted live (equal to the batch prediction), no reliability
    map, and query scores refused with a message."""
    from napari_seal._widgets.live_jobs import EncoderWithHead
    from napari_seal.predict.expression import (
        expression_head,
        expression_image,
        open_store,
    )

    errors = []
    monkeypatch.setattr("napari_seal._widgets._common.show_error", errors.append)
    head_file = _color_head(tmp_path)
    head = expression_head(head_file)
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-seal", "her2st")
    panel = ExploreWidget(viewer)
    viewer.window.add_dock_widget(panel, name="Explore")
    model = EncoderWithHead("color-stats", str(head_file))
    panel.offer_model(model)
    assert panel.model_path() == model
    assert not errors
    assert "color-stats + head head.safetensors" in panel.model_combo.currentText()
    assert not panel.reliability.show_check.isEnabled()
    panel.paint_combo.setCurrentIndex(1)  # a query score: needs a run
    _type(qtbot, panel.gene_edit, head.genes[0])
    assert errors
    assert "SEAL run" in errors[-1]
    assert panel.live is None
    panel.paint_combo.setCurrentIndex(0)
    _type(qtbot, panel.gene_edit, head.genes[0])
    live = panel.live
    _until(lambda: live.last is not None and live.last.view_complete
           or live.job.error is not None, 120)
    assert live.job.error is None
    assert live.last.uncertainty is None
    batch, _, _ = expression_image(open_store(live.engine.store_path), head,
                                   head.genes[0])
    ov = live.overlay
    r, c = ov.rows[ov.exact], ov.cols[ov.exact]
    np.testing.assert_allclose(np.asarray(live.layer.data)[r, c],
                               np.asarray(batch)[r, c], rtol=1e-4, atol=1e-5)
    missing = str(tmp_path / "missing.safetensors")
    panel.offer_model(EncoderWithHead("color-stats", missing))
    assert "missing.safetensors" in errors[-1]
    assert "check the path" in errors[-1]
    assert panel.head is not None
    assert live.layer in viewer.layers  # nothing lost
    # the entry that failed is gone and the combo shows the model still in use
    assert panel.model_path() == model
    assert not any("missing" in panel.model_combo.itemText(i)
                   for i in range(panel.model_combo.count()))
    (tmp_path / "not_a_run").mkdir()
    n_entries = panel.model_combo.count()
    panel.offer_model(tmp_path / "not_a_run")
    assert "not a finished SEAL run" in errors[-1]
    assert panel.model_path() == model
    assert panel.model_combo.count() == n_entries
    panel.offer_model(model)  # offered again: the same entry, not a second one
    assert sum(panel.model_combo.itemData(i) == model
               for i in range(panel.model_combo.count())) == 1
