"""Load widget in a real viewer: bundled sample, summary, alignment check, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari_helpers import export_with_extent, is_tissue, world_to_pixel

from napari_seal._widgets._load import LoadWidget

DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def test_load_bundled_sample(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    widget = LoadWidget(viewer)
    viewer.window.add_dock_widget(widget, name="napari-seal: Load")
    widget.bundled_button.click()  # opens in a worker
    qtbot.waitUntil(lambda: not widget.job.running, timeout=60_000)
    assert widget.sample is not None
    assert [layer._type_string for layer in viewer.layers] == ["image", "points"]
    text = widget.summary.text()
    assert "187 spots" in text
    assert "µm/px (estimated)" in text
    assert "100 µm" in text
    assert widget.alignment is not None
    assert widget.alignment.ok
    assert widget.alignment.fraction_on_tissue > 0.9
    assert "fall on tissue" in widget.check.text()

    image, points = viewer.layers
    points.visible = False
    img, extent = export_with_extent(viewer, [image])
    rows, cols = world_to_pixel(points.data, img, extent)
    assert is_tissue(img[rows, cols]).mean() > 0.85
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    points.visible = True
    from PIL import Image

    Image.fromarray(np.asarray(viewer.screenshot(canvas_only=False, flash=False))).save(
        DOCS_IMAGES / "widget_load.png")


def test_load_misaligned_spots_warn(make_napari_viewer, tmp_path):
    """Spots shifted onto glass: the alignment check says so."""
    from napari_seal.io.hest import bundled_sample_path, load_sample
    from napari_seal.tiling.qc import check_alignment

    sample = load_sample(bundled_sample_path())
    good = check_alignment(sample)
    shifted = sample.adata.copy()
    xy = shifted.obsm["spatial"].copy()
    xy[:, 0] = xy[:, 0] - xy[:, 0].min() + 5  # pack the spots against the left edge
    xy[:, 1] = xy[:, 1] - xy[:, 1].min() + 5
    shifted.obsm["spatial"] = xy
    sample.adata = shifted
    bad = check_alignment(sample)
    assert good.ok
    assert not bad.ok
    assert bad.fraction_on_tissue < good.fraction_on_tissue - 0.3
    assert "background" in bad.message


def test_load_bad_path_notifies(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    widget = LoadWidget(viewer)
    shown = []
    monkeypatch.setattr("napari_seal._widgets._common.show_error", shown.append)
    widget.st_edit.setText(str(tmp_path / "missing"))
    widget.open_button.click()
    qtbot.waitUntil(lambda: not widget.job.running, timeout=60_000)
    assert shown
    assert "missing" in shown[0]
    assert len(viewer.layers) == 0
