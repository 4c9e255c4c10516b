"""The user's install path end to end: napari under Xvfb + llvmpipe, triton installed.

The session runs in its own process, so a native crash (the triton/Mesa LLVM clash of
docs/napari.md) shows as a failing exit code instead of killing the test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("user_session.py")


@pytest.mark.timeout(1200)
def test_user_session_never_crashes(tmp_path, qapp):
    assert os.environ.get("DISPLAY"), "pytest-xvfb provides the X display"
    env = {**os.environ, "NAPARI_SEAL_CACHE": str(tmp_path / "cache")}
    env.pop("QT_QPA_PLATFORM", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=1100, check=False,
    )
    tail = (proc.stdout[-3000:] + proc.stderr[-3000:])
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{tail}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["steps"] == ["docked", "empty-buttons", "fine-tune", "embed",
                               "expression", "query", "lookup"]
    assert report["errors"] == []
    assert report["modal_at_end"] == []
    assert report["modal_after_empty"] == []
    assert "nearest spots" in report["lookup_status"]
    # the situation of the bug: triton importable and Mesa's LLVM in the process
    try:
        import importlib.util

        has_triton = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        has_triton = False
    if has_triton:
        assert report["triton_loaded"], "the torch stack did not reach triton"


def _canvas_then_torch(mode: str, tmp_path):
    env = {**os.environ, "NAPARI_SEAL_CACHE": str(tmp_path / "cache")}
    env.pop("QT_QPA_PLATFORM", None)
    return subprocess.run(
        [sys.executable, str(SCRIPT.with_name("triton_canvas.py")), mode],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )


@pytest.mark.timeout(600)
def test_triton_guard_is_what_keeps_the_viewer_alive(tmp_path, qapp):
    """With the guard, torchvision (-> triton) after the canvas exits 0; without it, on
    Mesa's LLVM with triton installed, the same process dies (the reported crash), so
    this test would catch the guard breaking."""
    guarded = _canvas_then_torch("guard", tmp_path)
    assert guarded.returncode == 0, guarded.stderr[-3000:]
    info = json.loads(guarded.stdout.strip().splitlines()[-1])
    if not (info["llvm_mapped"] and info["triton_loaded"]):
        pytest.skip("no Mesa LLVM in this process or no triton: the clash cannot "
                    "happen")
    core = _canvas_then_torch("core", tmp_path)  # `import napari_seal` alone guards
    assert core.returncode == 0, core.stderr[-3000:]
    control = _canvas_then_torch("noguard", tmp_path)
    assert control.returncode != 0, "the unguarded import no longer crashes: " + (
        "retire the guard (docs/napari.md) if triton stopped exporting LLVM symbols")
