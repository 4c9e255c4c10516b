"""The live overlay: computed where the camera looks first, pans, cancel, `view` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import napari_seal

PACKAGE = Path(napari_seal.__file__).parent


def _slide():
    from napari_seal.embedding.inputs import resolve_slide
    from napari_seal.io.hest import bundled_sample_path

    return resolve_slide(bundled_sample_path())


def _make(slide, store):
    """(engine, overlay) with test-vit and a head summing the embedding."""

    def make():
        import torch

        from napari_seal.embedding.on_demand import OnDemandEmbedder
        from napari_seal.models.factory import create_encoder
        from napari_seal.predict.heads import ExpressionHead
        from napari_seal.predict.live import LiveOverlay

        torch.manual_seed(0)
        engine = OnDemandEmbedder(slide, create_encoder("test-vit"), store,
                                  batch_size=8, margin=0.0)
        head = ExpressionHead(genes=["G"], hidden_fn=lambda e: e[:, :1] - e[:, 1:2])
        return engine, LiveOverlay(engine.grid, head, "G")

    return make


def _until(pred, timeout_s=240.0):
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < end, "timed out"
        QApplication.processEvents()
        time.sleep(0.01)


def _camera(viewer):
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _look_at(viewer, x_um, y_um, fov_um):
    w = viewer.window._qt_viewer.canvas.size[1]
    _camera(viewer).center = (y_um, x_um)
    _camera(viewer).zoom = w / fov_um


def _screen(viewer, x_um, y_um):
    """Canvas pixel (row, col) of world (x, y) um."""
    h, w = viewer.window._qt_viewer.canvas.size
    cy, cx = _camera(viewer).center[-2:]
    z = _camera(viewer).zoom
    return int(round((y_um - cy) * z + h / 2)), int(round((x_um - cx) * z + w / 2))


def test_overlay_first_where_the_camera_looks_then_pans(make_napari_viewer, tmp_path):
    from napari_seal._widgets._live import LiveOverlayView
    from napari_seal.layers import slide_layer

    slide = _slide()
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = slide_layer(slide)
    viewer.add_image(data, **kwargs)
    viewer.window._qt_viewer.canvas.size = (600, 600)
    mpp = slide.mpp
    w_um, h_um = slide.width_px * mpp, slide.height_px * mpp
    a = (0.6 * w_um, 0.6 * h_um)  # tissue (lower right of the section)
    _look_at(viewer, *a, 800)
    updates = []
    live = LiveOverlayView(viewer, _make(slide, tmp_path / "s.zarr"),
                           name="G", on_update=updates.append).start()
    _until(lambda: live.last is not None and live.last.view_complete)
    engine = live.engine
    first = updates[0]
    assert first.view_done > 0
    visible_a = engine.visible_tiles()
    assert engine.known[visible_a].all()
    far = np.setdiff1d(np.arange(len(engine.grid.tile_ids)), visible_a)
    assert not engine.known[far].all()  # the rest of the slide is not computed
    # a pan re-prioritises at once: the next batches are in the new view
    gen = engine.generation
    centres = engine.grid.centres_xy * mpp
    target = np.array([a[0] - 1500, a[1] - 300])
    b = tuple(centres[np.argmin(((centres - target) ** 2).sum(1))])  # on tissue
    known_before = engine.known.copy()
    t = time.perf_counter()
    _look_at(viewer, *b, 800)
    assert engine.generation > gen  # taken within the camera event
    assert time.perf_counter() - t < 0.1
    n_before = len(updates)
    _until(lambda: len(updates) > n_before and updates[-1].view_complete)
    visible_b = engine.visible_tiles()
    new = np.flatnonzero(engine.known & ~known_before)
    assert new.size
    assert set(new) <= set(visible_b)  # computed only in the new view
    assert engine.known[visible_a].all()  # finished tiles are kept
    live.cancel()
    _until(lambda: not live.job.running)
    # rendered pixels: zoom out over both views, overlay on vs off
    _look_at(viewer, w_um / 2, h_um / 2, max(w_um, h_um) * 1.05)
    viewer.layers["G"].visible = False
    off = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]
    viewer.layers["G"].visible = True
    on = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]
    diff = np.abs(on.astype(int) - off.astype(int)).sum(-1)
    computed = [_screen(viewer, *centres[i]) for i in visible_a[:20]]
    assert np.mean([diff[r, c] > 30 for r, c in computed]) > 0.9
    unknown = np.flatnonzero(~engine.known)
    pts = [_screen(viewer, *centres[i]) for i in unknown[:: max(1, unknown.size // 50)]]
    assert all(diff[r, c] == 0 for r, c in pts)  # not computed: nothing drawn


def test_closing_the_viewer_cancels(make_napari_viewer, tmp_path):
    from napari_seal._widgets._live import LiveOverlayView
    from napari_seal.layers import slide_layer

    slide = _slide()
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = slide_layer(slide)
    viewer.add_image(data, **kwargs)
    _look_at(viewer, 3500, 3500, 5000)  # wide: many tiles to compute
    live = LiveOverlayView(viewer, _make(slide, tmp_path / "s.zarr"), name="G")
    job = live.job
    live.start()
    _until(lambda: live.engine is not None and live.n_updates > 0)
    engine = live.engine
    viewer.close()
    _until(lambda: not job.running, timeout_s=30)
    assert engine.cancelled
    n = engine.tiles_computed
    time.sleep(0.5)
    assert engine.tiles_computed == n
    assert not engine.known.all()


def _run_view(args, env, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "napari_seal", "view", *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def view_env(tmp_path):
    env = dict(os.environ)
    env["NAPARI_SEAL_CACHE"] = str(tmp_path / "ws")
    return env


def test_view_exit_when_ready_writes_json_and_screenshot(tiny_run, tmp_path, view_env):
    from napari_seal.io.hest import bundled_sample_path

    sample = bundled_sample_path()
    before_sample, before_data = _tree(sample), _tree(PACKAGE / "data")
    out, shot = tmp_path / "view.json", tmp_path / "view.png"
    proc = _run_view(
        [str(sample), "--run", str(tiny_run), "--gene", "ERBB2", "--fov-um", "1000",
         "--center-um", "3500,3500", "--exit-when-ready", "--json", str(out),
         "--screenshot", str(shot)],
        view_env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["visible_tiles"] > 10
    assert d["visible_tiles"] <= d["tiles_computed"] <= 3 * d["visible_tiles"]
    assert 0 < d["first_paint_s"] <= d["visible_complete_s"]
    assert d["max_stall_ms"] >= 0
    assert d["model"] == f"run:{Path(tiny_run).resolve()}"
    assert d["panel"] is True  # the Explore panel docked, steering this overlay
    # the model and tissue mask were started before the window opened (not after)
    assert d["prepare_s"][0] < 0 <= d["prepare_s"][1] - d["prepare_s"][0]
    store = Path(d["store"])
    assert store.is_dir()
    assert Path(view_env["NAPARI_SEAL_CACHE"]) in store.parents
    # the workspace rule: nothing beside the input, nothing into the package
    assert _tree(sample) == before_sample
    assert _tree(PACKAGE / "data") == before_data
    from PIL import Image

    img = np.asarray(Image.open(shot))[..., :3].astype(int)
    assert img.shape[0] > 100
    assert img.std() > 5
    # the store is the one `predict` would use: every visible tile flagged
    from napari_seal.predict.expression import open_store

    assert open_store(store).tile_done.sum() >= d["visible_tiles"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--gene", "NOT_A_GENE"], "NOT_A_GENE"),
        (["--gene", "ERBB2", "--center-um", "12"], "--center-um"),
        (["--gene", "ERBB2", "--fov-um", "-3"], "--fov-um"),
    ],
)
def test_view_bad_input_exits_2_with_one_line(tiny_run, view_env, extra, needle):
    from napari_seal.io.hest import bundled_sample_path

    proc = _run_view([str(bundled_sample_path()), "--run", str(tiny_run), *extra,
                      "--exit-when-ready"], view_env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert needle in lines[0]


def test_view_with_an_encoder_and_a_saved_head_docks_the_panel(tmp_path, view_env):
    from test_explore import _color_head

    from napari_seal.io.hest import bundled_sample_path
    from napari_seal.predict.expression import expression_head

    head = _color_head(tmp_path)
    gene = expression_head(head).genes[0]
    out = tmp_path / "view.json"
    proc = _run_view([str(bundled_sample_path()), "--encoder", "color-stats", "--head",
                      str(head), "--gene", gene, "--exit-when-ready", "--json",
                      str(out)],
                     view_env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["panel"] is True
    assert d["model"] == "color-stats"
    assert d["visible_tiles"] > 0
    assert d["visible_complete_s"] > 0
