"""What a background job costs the GUI, and the GUI the job.

The activity bar: napari's, unless it would slow the job down.

While any napari progress bar is open, napari's status bar animates an "in
progress..." GIF. Each frame repaints the window, and a window holding an OpenGL
canvas is composited through OpenGL: on a software rasteriser (Mesa llvmpipe,
softpipe: Xvfb, VMs and remote desktops without a GPU) that costs most of a CPU
core. Measured on a 2-core machine, the default encoder ran at 0.42 x its speed
beside the animation (``benchmarks/diag_activity_indicator.py``). So on software
OpenGL a job's progress is shown in its dock's status line only;
``$NAPARI_SEAL_ACTIVITY_BAR=1`` (or ``0``) forces the bar on (off) everywhere.

Priority: a job's worker thread (and the BLAS/OpenMP threads it starts) runs at a
nice value of 5 on Linux (:func:`lower_thread_priority`), so the GUI thread and the
rasteriser win the CPU when both want it and the job has it when the GUI is idle.
Measured with ``napari-seal view`` on 2 cores: worst repaint stall 83-97 ms ->
59-76 ms, tiles/s unchanged (``$NAPARI_SEAL_JOB_NICE=0`` turns it off).
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from typing import Any

from napari.utils import progress as napari_progress

__all__ = [
    "activity_bar", "gl_renderer", "lower_thread_priority", "software_gl",
    "warm_progress_ui",
]

log = logging.getLogger(__name__)

#: Substrings of GL_RENDERER naming a CPU rasteriser.
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "software rasterizer")
_RENDERER: list[str] = []  # the renderer, once read
_PROGRESS_UI_WARM = False
#: Nice value of a job's worker thread (Linux).
JOB_NICE = 5


def gl_renderer() -> str | None:
    """``GL_RENDERER`` of napari's canvas (None before a canvas exists)."""
    if _RENDERER:
        return _RENDERER[0]
    try:
        from vispy.gloo import gl
        from vispy.gloo.context import get_current_canvas

        canvas = get_current_canvas()
        if canvas is None:
            return None
        canvas.set_current()
        renderer = str(gl.glGetParameter(gl.GL_RENDERER))
    except Exception as err:  # noqa: BLE001 - a GL query must never break a job
        log.debug("cannot read GL_RENDERER: %s", err)
        return None
    _RENDERER.append(renderer)
    return renderer


def software_gl() -> bool:
    """Whether napari's canvas is drawn by a CPU rasteriser (llvmpipe, ...)."""
    renderer = (gl_renderer() or "").lower()
    return any(name in renderer for name in SOFTWARE_RENDERERS)


class _NoBar:
    """The part of napari's progress bar a job uses, showing nothing."""

    total = 0
    n = 0

    def refresh(self) -> None:
        """Nothing to draw."""

    def set_description(self, _text: str) -> None:
        """Nothing to draw."""

    def close(self) -> None:
        """Nothing to close."""


def activity_bar(description: str, *, enabled: bool = True) -> Any:
    """napari's activity bar for a job, or a silent stand-in.

    Silent when ``enabled`` is False (open-ended jobs: the live overlay) or when
    the canvas is software-rendered (module docstring), unless
    ``$NAPARI_SEAL_ACTIVITY_BAR`` says otherwise.
    """
    env = os.environ.get("NAPARI_SEAL_ACTIVITY_BAR")
    show = env == "1" if env in ("0", "1") else enabled and not software_gl()
    return napari_progress(total=0, desc=description) if show else _NoBar()


def warm_progress_ui() -> None:
    """Create and close one napari progress bar, once per process.

    napari builds its activity-dock progress widgets on the first progress bar; done at
    a job's start that costs ~125 ms of the GUI thread (later bars: ~15 ms). The
    widgets call this when they are built instead (where the bar is shown at all).
    """
    global _PROGRESS_UI_WARM
    if _PROGRESS_UI_WARM:
        return
    _PROGRESS_UI_WARM = True
    activity_bar("napari-seal ready").close()


def lower_thread_priority() -> int | None:
    """Raise the calling thread's nice value to ``JOB_NICE`` (Linux; never lowers it).

    Called by a job at the start of its worker thread, before the first model call,
    so the OpenMP threads torch starts for it inherit the value. Returns the nice
    value now in force, or None where it is not changed (other systems, opted out).
    """
    try:
        nice = int(os.environ.get("NAPARI_SEAL_JOB_NICE", JOB_NICE))
    except ValueError:  # a typo in the variable must not stop the job
        log.warning("NAPARI_SEAL_JOB_NICE is not an integer; using %d", JOB_NICE)
        nice = JOB_NICE
    if nice <= 0 or platform.system() != "Linux":
        return None
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        return max(current, nice)
    except OSError as err:  # a sandbox may refuse: the job runs as it is
        log.debug("cannot lower the job thread's priority: %s", err)
        return None
