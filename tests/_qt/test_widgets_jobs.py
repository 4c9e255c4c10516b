"""Embed, Expression, Gene query and Fine-tune widgets in a real viewer.

Each test sets the inputs, triggers the action, waits for the worker and asserts on
layers AND on rendered pixels. The event loop's lateness is recorded by a QTimer
during training and embedding runs (budget: 100 ms).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_seal.io.hest import bundled_sample_path

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"

# The design budget is 100 ms (DESIGN 6). On a loaded 2-core machine, scheduling noise
# alone exceeds it, so the default suite asserts "never frozen" (3 s: running the job
# on the GUI thread would stall for its whole duration) and the slow-marked twin asserts
# the 100 ms budget (`make test-slow`, on a quiet machine).
FROZEN_MS = 3000.0
BUDGET_MS = 100.0


class LatenessProbe:
    """Fires every ``interval_ms`` and records how late each tick was."""

    def __init__(self, interval_ms: int = 20):
        self.interval = interval_ms / 1000
        self.late: list[float] = []
        self._last = None
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        if self._last is not None:
            self.late.append(now - self._last - self.interval)
        self._last = now

    def start(self):
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self):
        self.timer.stop()

    @property
    def worst_ms(self) -> float:
        return 1000 * max(self.late) if self.late else 0.0


def _load(viewer):
    from napari_seal._widgets._load import LoadWidget

    load = LoadWidget(viewer)
    load.bundled_button.click()
    wait_for_job(load)
    return load


def wait_for_job(widget, timeout_s: float = 120.0) -> None:
    """Process events until ``widget.job`` has finished (the Load widget opens in a
    worker)."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout_s
    while widget.job is not None and widget.job.running:
        assert time.monotonic() < end, f"{type(widget).__name__} job still running"
        QApplication.processEvents()
        time.sleep(0.01)


def _save(widget_or_viewer, name):
    from PIL import Image

    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    if hasattr(widget_or_viewer, "screenshot"):
        arr = widget_or_viewer.screenshot(canvas_only=False, flash=False)
        Image.fromarray(np.asarray(arr)).save(DOCS_IMAGES / name)
    else:
        widget_or_viewer.grab().save(str(DOCS_IMAGES / name))


def test_finetune_widget_trains_in_background(make_napari_viewer, qtbot, tmp_path):
    _finetune_in_background(make_napari_viewer, qtbot, tmp_path, FROZEN_MS)


@pytest.mark.slow
def test_finetune_event_loop_budget(make_napari_viewer, qtbot, tmp_path):
    _finetune_in_background(make_napari_viewer, qtbot, tmp_path, BUDGET_MS)


def _finetune_in_background(make_napari_viewer, qtbot, tmp_path, budget_ms):
    from napari_seal._widgets._finetune import FinetuneWidget

    viewer = make_napari_viewer(show=True)
    _load(viewer)
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune")
    widget.add_loaded_button.click()
    assert widget.samples() == [str(bundled_sample_path())]
    widget.encoder_combo.setCurrentIndex(widget.encoder_combo.findData("test-vit"))
    widget.preset_combo.setCurrentText("cpu-smoke")
    widget.steps_spin.setValue(4)
    widget.out_edit.setText(str(tmp_path / "run"))
    widget.bench_check.setChecked(False)
    qtbot.wait(500)  # let the set-up's own repaints (docks, layers) finish first
    probe = LatenessProbe()
    probe.start()
    widget.train_button.click()
    assert widget.job is not None
    qtbot.waitUntil(lambda: not widget.job.running, timeout=300_000)
    probe.stop()
    assert widget.job.error is None
    assert widget.run_dir == tmp_path / "run"
    assert (widget.run_dir / "DONE").exists()
    # the live plot received every step's loss terms
    assert set(widget.loss_plot.series) == {"loss", "clip", "recon_vae", "recon_img"}
    assert len(widget.loss_plot.series["loss"][0]) == 4
    assert probe.worst_ms < budget_ms, f"event loop stalled {probe.worst_ms:.0f} ms"
    _save(widget, "widget_finetune.png")


def test_finetune_widget_cancel_then_resume(make_napari_viewer, qtbot, tmp_path):
    from napari_seal._widgets._finetune import FinetuneWidget

    viewer = make_napari_viewer()
    _load(viewer)
    widget = FinetuneWidget(viewer)
    widget.add_loaded_button.click()
    widget.encoder_combo.setCurrentIndex(widget.encoder_combo.findData("test-vit"))
    widget.preset_combo.setCurrentText("cpu-smoke")
    widget.steps_spin.setValue(40)
    widget.out_edit.setText(str(tmp_path / "run"))
    widget.bench_check.setChecked(False)
    widget.train_button.click()
    qtbot.waitUntil(
        lambda: len(widget.loss_plot.series.get("loss", ([], []))[0]) >= 1,
        timeout=300_000,
    )
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.job.running, timeout=120_000)
    assert not (tmp_path / "run" / "DONE").exists()
    assert any((tmp_path / "run" / "checkpoints").iterdir())
    widget.resume_check.setChecked(True)
    widget.steps_spin.setValue(6)
    widget.train_button.click()
    qtbot.waitUntil(lambda: not widget.job.running, timeout=300_000)
    assert widget.job.error is None
    assert (tmp_path / "run" / "DONE").exists()


def test_embed_widget_runs_and_hands_store_on(
    make_napari_viewer, qtbot, tmp_path, tiny_run
):
    _embed_in_background(make_napari_viewer, qtbot, tmp_path, tiny_run, FROZEN_MS)


@pytest.mark.slow
def test_embed_event_loop_budget(make_napari_viewer, qtbot, tmp_path, tiny_run):
    _embed_in_background(make_napari_viewer, qtbot, tmp_path, tiny_run, BUDGET_MS)


def _embed_in_background(make_napari_viewer, qtbot, tmp_path, tiny_run, budget_ms):
    from napari_seal._widgets._embed import EmbedWidget
    from napari_seal._widgets._expression import ExpressionWidget
    from napari_seal.predict.expression import open_store

    viewer = make_napari_viewer(show=True)
    _load(viewer)
    embed = EmbedWidget(viewer)
    expr = ExpressionWidget(viewer)
    viewer.window.add_dock_widget(embed, name="Embed")
    viewer.window.add_dock_widget(expr, name="Expression")
    assert embed.source_combo.count() == 1
    embed.offer_run(tiny_run)
    expr.offer_run(tiny_run)
    embed.store_edit.setText(str(tmp_path / "e.zarr"))
    qtbot.wait(500)  # let the set-up's own repaints (docks, layers) finish first
    probe = LatenessProbe()
    probe.start()
    embed.run_button.click()
    qtbot.waitUntil(lambda: not embed.job.running, timeout=300_000)
    probe.stop()
    assert embed.job.error is None
    assert "tiles" in embed.status.text() or "Done" in embed.status.text()
    store = open_store(tmp_path / "e.zarr")
    assert store.n_tiles > 100
    # handed on to the Expression widget
    assert expr.store_edit.text() == str(tmp_path / "e.zarr")
    assert probe.worst_ms < budget_ms, f"event loop stalled {probe.worst_ms:.0f} ms"
    _save(embed, "widget_embed.png")


def _loaded_expression(make_napari_viewer, run, store):
    """A shown viewer with the bundled sample and an Expression dock that has loaded
    ``run``'s predictor and ``store`` (in its worker)."""
    from napari_seal._widgets._expression import ExpressionWidget

    viewer = make_napari_viewer(show=True)
    _load(viewer)
    widget = ExpressionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Expression")
    widget.store_edit.setText(str(store))
    widget.head_edit.setText(str(run))
    widget.load_button.click()
    wait_for_job(widget)
    return viewer, widget


def test_expression_widget_overlay_pixels(make_napari_viewer, tiny_run, tiny_store):
    from napari_seal._widgets._expression import OVERLAY

    viewer, widget = _loaded_expression(make_napari_viewer, tiny_run, tiny_store)
    assert widget.head is not None
    gene = "ERBB2" if "ERBB2" in widget.head.genes else widget.head.genes[0]
    widget.gene_edit.setText(gene)
    widget.show_button.click()
    wait_for_job(widget)
    layer = viewer.layers[OVERLAY]
    assert layer.colorbar.visible
    values = np.asarray(layer.data)
    assert np.isfinite(values).sum() == widget.store.n_tiles
    assert widget.last_r is not None
    assert -1 <= widget.last_r <= 1
    assert f"measured {gene} at spots" in viewer.layers
    # pixels: the brightest and darkest tiles render in different colours
    for other in viewer.layers:
        other.visible = other is layer
    hi = np.unravel_index(np.nanargmax(values), values.shape)
    lo = np.unravel_index(np.nanargmin(values), values.shape)

    def centre(rc):
        return (np.asarray(layer.translate)[-2:]
                + np.asarray(rc) * np.asarray(layer.scale)[-2:])

    viewer.camera.center = tuple(centre(hi))
    viewer.camera.zoom = 4.0 / layer.scale[-1]
    px_hi = np.asarray(viewer.screenshot(canvas_only=True, flash=False))
    viewer.camera.center = tuple(centre(lo))
    px_lo = np.asarray(viewer.screenshot(canvas_only=True, flash=False))
    mid_hi = px_hi[px_hi.shape[0] // 2, px_hi.shape[1] // 2, :3].astype(int)
    mid_lo = px_lo[px_lo.shape[0] // 2, px_lo.shape[1] // 2, :3].astype(int)
    assert np.abs(mid_hi - mid_lo).sum() > 100, (mid_hi, mid_lo)
    # switching gene swaps data in place (same layer) and recolours
    other_gene = [g for g in widget.head.genes if g != gene][0]
    widget.gene_edit.setText(other_gene)
    widget.show_button.click()
    wait_for_job(widget)
    assert viewer.layers[OVERLAY] is layer
    assert layer.metadata["napari_seal"]["gene"] == other_gene
    for other in viewer.layers:
        other.visible = (
            other.name in (OVERLAY, layer.name) or other._type_string == "image"
        )
    viewer.reset_view()
    _save(viewer, "widget_expression.png")


def test_expression_widget_reliability_map_and_hiding(
    make_napari_viewer, tiny_run, tiny_store
):
    """The uncertainty overlay shows the reliability map of the gene; "hide where
    unreliable" blanks exactly the tiles above the threshold, and they render as
    background."""
    from napari_seal._widgets._expression import OVERLAY, UNCERTAINTY, ExpressionWidget

    viewer = make_napari_viewer(show=True)
    widget = ExpressionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Expression")
    widget.compare_check.setChecked(False)
    widget.store_edit.setText(str(tiny_store))
    widget.head_edit.setText(str(tiny_run))
    widget.load_button.click()
    wait_for_job(widget)
    assert widget.reference is not None
    assert widget.uncertainty_check.isEnabled()
    gene = "ERBB2" if "ERBB2" in widget.head.genes else widget.head.genes[0]
    widget.gene_edit.setText(gene)
    widget.uncertainty_check.setChecked(True)
    widget.show_button.click()
    wait_for_job(widget)
    unc = np.asarray(viewer.layers[UNCERTAINTY].data)
    values = np.asarray(viewer.layers[OVERLAY].data)
    assert np.isfinite(unc).sum() == widget.store.n_tiles
    assert viewer.layers[UNCERTAINTY].metadata["napari_seal"]["gene"] == gene
    widget.uncertainty_check.setChecked(False)
    assert UNCERTAINTY not in viewer.layers
    thr = float(np.nanmedian(unc))
    widget.max_unc_spin.setValue(thr)
    thr = widget.max_unc_spin.value()  # the spin box rounds to 2 decimals
    widget.hide_check.setChecked(True)
    layer = viewer.layers[OVERLAY]
    shown = np.asarray(layer.data)
    hidden = np.isfinite(values) & ~np.isfinite(shown)
    assert hidden.sum() == np.sum(unc > thr) > 0
    assert layer.metadata["napari_seal"]["hidden_unreliable"] == int(hidden.sum())
    assert "unreliable tiles hidden" in widget.status.text()
    # a hidden tile renders as the (black) canvas background, a kept one does not
    keep = np.isfinite(shown)
    r_h, c_h = np.argwhere(hidden)[0]
    r_k, c_k = np.argwhere(keep)[np.nanargmax(shown[keep])]
    viewer.camera.zoom = 4.0 / layer.scale[-1]
    px = {}
    for key, rc in (("hidden", (r_h, c_h)), ("kept", (r_k, c_k))):
        viewer.camera.center = tuple(
            np.asarray(layer.translate)[-2:]
            + np.asarray(rc) * np.asarray(layer.scale)[-2:]
        )
        img = np.asarray(viewer.screenshot(canvas_only=True, flash=False))
        px[key] = img[img.shape[0] // 2, img.shape[1] // 2, :3].astype(int)
    assert px["hidden"].sum() < 40, px
    assert np.abs(px["kept"] - px["hidden"]).sum() > 100, px
    widget.hide_check.setChecked(False)
    overlay = np.asarray(viewer.layers[OVERLAY].data)
    assert np.isfinite(overlay).sum() == widget.store.n_tiles


def test_query_widget_scores_gallery_and_jump(
    make_napari_viewer, qtbot, tiny_run, tiny_store
):
    from napari_seal._widgets._query import QueryWidget

    viewer = make_napari_viewer(show=True)
    _load(viewer)
    widget = QueryWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Gene query")
    widget.offer_run(tiny_run)
    widget.offer_store(tiny_store)
    from napari_seal.training.runs import load_run

    genes = load_run(tiny_run).panel.genes
    gene = "ERBB2" if "ERBB2" in genes else genes[0]
    widget.query_edit.setText(gene)
    widget.run_button.click()
    qtbot.waitUntil(
        lambda: (
            widget.result is not None
            or (widget.job is not None and widget.job.error is not None)
        ),
        timeout=300_000,
    )
    assert widget.job.error is None
    names = [layer.name for layer in viewer.layers]
    assert any(n.startswith("query ") for n in names)
    assert any(n.startswith("top ") for n in names)
    assert widget.gallery.count() == 12
    item = widget.gallery.item(0)
    widget.gallery.itemClicked.emit(item)
    x, y = widget.top.coords[0]
    mpp = viewer.layers[0].scale[-1]
    assert abs(viewer.camera.center[-1] - x * mpp) < 200
    assert abs(viewer.camera.center[-2] - y * mpp) < 200
    viewer.reset_view()
    _save(viewer, "widget_query.png")


def test_query_widget_unknown_gene_notifies(
    make_napari_viewer, qtbot, tiny_run, tiny_store, monkeypatch
):
    from napari_seal._widgets._query import QueryWidget

    shown = []
    monkeypatch.setattr("napari_seal._widgets._common.show_error", shown.append)
    viewer = make_napari_viewer()
    _load(viewer)
    widget = QueryWidget(viewer)
    widget.offer_run(tiny_run)
    widget.offer_store(tiny_store)
    widget.query_edit.setText("NOTAGENE1")
    widget.run_button.click()
    qtbot.waitUntil(lambda: bool(shown), timeout=120_000)
    assert "NOTAGENE1" in shown[0]


def test_expression_widget_takes_a_gene_in_any_case(
    make_napari_viewer, tiny_run, tiny_store
):
    """A gene typed in lower case is the panel's gene everywhere: the overlay, the
    reliability map and the comparison at the spots (it raised a KeyError there)."""
    from napari_seal._widgets._expression import OVERLAY, UNCERTAINTY

    viewer, widget = _loaded_expression(make_napari_viewer, tiny_run, tiny_store)
    gene = next(g for g in widget.head.genes if g.lower() != g)
    widget.gene_edit.setText(gene.lower())
    widget.uncertainty_check.setChecked(True)
    widget.show_button.click()
    wait_for_job(widget)
    assert viewer.layers[OVERLAY].metadata["napari_seal"]["gene"] == gene
    assert viewer.layers[UNCERTAINTY].metadata["napari_seal"]["gene"] == gene
    assert f"measured {gene} at spots" in viewer.layers
    assert widget.last_r is not None
    assert -1 <= widget.last_r <= 1
