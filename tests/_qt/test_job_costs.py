"""What a background job costs the GUI and the GUI the job (``_widgets._activity``).

napari's animated "in progress..." indicator slowed the encoder to 0.42 x on
software OpenGL (benchmarks/diag_activity_indicator.py); the live overlay (open-ended)
never opens one, other jobs only where the canvas is hardware-rendered; job worker
threads run at a higher nice value so repaints win the CPU.
"""

from __future__ import annotations

import os
import platform
import threading
from pathlib import Path

import pytest
from napari.utils import progress
from test_live_view import _until

from napari_seal._widgets import _activity
from napari_seal._widgets._common import Job


def _open_bars(desc: str) -> list:
    return [p for p in progress._all_instances if desc in (p.desc or "")]


def test_gl_renderer_is_read_from_the_canvas(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_viewer.canvas.size = (200, 200)
    renderer = _activity.gl_renderer()
    assert isinstance(renderer, str)
    assert renderer
    # under Xvfb the canvas is Mesa's CPU rasteriser: the bar is left out there
    if "llvmpipe" in renderer.lower():
        assert _activity.software_gl()


@pytest.mark.parametrize(
    ("software", "env", "enabled", "napari_bar"),
    [
        (False, None, True, True),  # a GPU: napari's bar
        (True, None, True, False),  # llvmpipe: the dock's status line only
        (False, None, False, False),  # an open-ended job: never
        (True, "1", True, True),  # forced on
        (False, "0", True, False),  # forced off
    ],
)
def test_activity_bar_policy(monkeypatch, software, env, enabled, napari_bar):
    monkeypatch.setattr(_activity, "software_gl", lambda: software)
    if env is None:
        monkeypatch.delenv("NAPARI_SEAL_ACTIVITY_BAR", raising=False)
    else:
        monkeypatch.setenv("NAPARI_SEAL_ACTIVITY_BAR", env)
    bar = _activity.activity_bar("policy-check", enabled=enabled)
    try:
        assert isinstance(bar, progress) is napari_bar
        assert bool(_open_bars("policy-check")) is napari_bar
    finally:
        bar.close()
    assert not _open_bars("policy-check")


def _waiting_job(description: str, release: threading.Event, **kw) -> Job:
    def gen():
        while not release.wait(0.02):
            yield None
        return "done"

    return Job(gen, description=description, **kw)


def test_live_overlay_opens_no_napari_bar_even_on_a_gpu(monkeypatch, make_napari_viewer,
                                                        tmp_path):
    from test_live_view import _look_at, _make, _slide

    from napari_seal._widgets._live import LiveOverlayView
    from napari_seal.layers import slide_layer

    monkeypatch.setattr(_activity, "software_gl", lambda: False)  # as on a GPU
    monkeypatch.delenv("NAPARI_SEAL_ACTIVITY_BAR", raising=False)
    slide = _slide()
    viewer = make_napari_viewer(show=True)
    data, kwargs, _ = slide_layer(slide)
    viewer.add_image(data, **kwargs)
    _look_at(viewer, 3500, 3500, 600)
    # the control: an ordinary job there does open napari's bar
    release = threading.Event()
    job = _waiting_job("control-job", release).start()
    assert _open_bars("control-job")
    release.set()
    _until(lambda: not job.running)
    assert not _open_bars("control-job")
    live = LiveOverlayView(viewer, _make(slide, tmp_path / "s.zarr"), name="G").start()
    _until(lambda: live.last is not None and live.last.view_complete)
    assert live.job.running  # idle, waiting for the camera: still no bar
    assert not _open_bars("computing the view")
    live.cancel()
    _until(lambda: not live.job.running)


def _nice(tid: int) -> int:
    text = Path(f"/proc/self/task/{tid}/stat").read_text()
    return int(text[text.rindex(")") + 2:].split()[16])


def _tids() -> set[int]:
    return {int(p.name) for p in Path("/proc/self/task").iterdir()}


def _torch_work():
    import torch

    a = torch.randn(512, 512)
    for _ in range(20):  # intra-op (OpenMP) threads start here
        a = torch.tanh(a @ a)
    return torch.get_num_threads()


@pytest.mark.skipif(platform.system() != "Linux", reason="per-thread nice is Linux's")
def test_job_threads_run_below_the_gui(monkeypatch, qapp):
    monkeypatch.delenv("NAPARI_SEAL_JOB_NICE", raising=False)
    seen: dict = {}

    def gen():
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        _torch_work()
        yield None

    job = Job(gen, description="nice-check").start()
    _until(lambda: not job.running)
    assert seen["nice"] >= _activity.JOB_NICE
    gui = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert gui < _activity.JOB_NICE


@pytest.mark.skipif(platform.system() != "Linux", reason="per-thread nice is Linux's")
def test_threads_a_job_starts_inherit_its_priority(monkeypatch):
    """torch's OpenMP team of a thread is created by it, after the nice call."""
    monkeypatch.delenv("NAPARI_SEAL_JOB_NICE", raising=False)
    before, out = _tids(), {}

    def work():
        out["nice"] = _activity.lower_thread_priority()
        out["threads"] = _torch_work()
        out["new"] = {t: _nice(t) for t in _tids() - before}

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert out["nice"] == _activity.JOB_NICE
    # the thread itself and its intra-op helpers (torch threads - 1)
    assert len(out["new"]) >= out["threads"]
    assert all(n >= _activity.JOB_NICE for n in out["new"].values()), out["new"]


def test_lower_thread_priority_never_lowers_and_can_be_off(monkeypatch):
    out: dict = {}

    def work():
        tid = threading.get_native_id()
        if platform.system() == "Linux":
            os.setpriority(os.PRIO_PROCESS, tid, 9)
        out["kept"] = _activity.lower_thread_priority()
        monkeypatch.setenv("NAPARI_SEAL_JOB_NICE", "five")
        out["typo"] = _activity.lower_thread_priority()
        monkeypatch.setenv("NAPARI_SEAL_JOB_NICE", "0")
        out["off"] = _activity.lower_thread_priority()

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if platform.system() == "Linux":
        assert out["kept"] == 9  # a nicer thread stays as nice
        assert out["typo"] == 9  # a bad value: the default, never an error
    assert out["off"] is None
