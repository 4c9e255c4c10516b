"""Shared glue for dock widgets: background jobs, progress, notifications, layers."""

import gc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel

from napari_seal._widgets._activity import (
    activity_bar,
    lower_thread_priority,
    warm_progress_ui,
)
from napari_seal.errors import SealError

__all__ = [
    "Job", "add_or_update_layer", "notify_error", "show_info", "show_warning",
    "warm_progress_ui",
]


def notify_error(err: BaseException) -> None:
    """Show a core error as a napari notification (fix-it text for SealError)."""
    if isinstance(err, SealError):
        show_error(str(err))
    else:
        show_error(f"napari-seal: unexpected {type(err).__name__}: {err}")


def path_field(edit, what: str) -> Path:
    """Path in ``edit``; empty (``Path("")`` = the cwd) or ``~nobody`` is bad input."""
    from napari_seal.errors import BadInputError

    text = edit.text().strip()
    if not text:
        msg = f"choose {what} first (the field is empty)"
        raise BadInputError(msg)
    try:
        return Path(text).expanduser()
    except RuntimeError as err:  # "~user/..." for a user that does not exist
        msg = f"cannot use {text!r} as {what}: {err} Type the full path."
        raise BadInputError(msg) from err


def add_or_update_layer(viewer, data, kwargs: dict, layer_type: str):
    """Add a layer, or update the image layer with the same name in place.

    Images keep their layer (so switching genes only swaps data and contrast);
    other layer types are replaced.
    """
    name = kwargs.get("name")
    if name in viewer.layers:
        layer = viewer.layers[name]
        if layer_type == "image" and layer._type_string == "image":
            layer.data = data
            for key in ("colormap", "scale", "translate", "metadata"):
                if key in kwargs:
                    setattr(layer, key, kwargs[key])
            return layer
        viewer.layers.remove(name)
    add = getattr(viewer, f"add_{layer_type}")
    return add(data, **kwargs)


_CANCELLED = object()


class _QuietGC:
    """Keep CPython's full (generation-2) collections off while background jobs run.

    With napari, torch and a model loaded the heap holds ~10^6 container objects, and
    a full collection walks all of them while holding the GIL: measured 0.1-2.5 s per
    collection on this project's CI machine, triggered by the allocations of a job's
    imports and training steps, freezing the GUI thread for as long. So, while at least
    one job runs:

    - the objects alive at job start (napari, the loaded libraries: long-lived anyway)
      are moved to the permanent generation (``gc.freeze``) and never walked again;
    - automatic full collections are postponed (young generations are still collected,
      they are small); the previous threshold comes back when the last job ends.
    """

    _active = 0
    _saved: tuple[int, int, int] | None = None

    @classmethod
    def enter(cls) -> None:
        if cls._active == 0:
            cls._saved = gc.get_threshold()
            gc.freeze()
            gen0, gen1, _ = cls._saved
            gc.set_threshold(gen0, gen1, 1_000_000)
        cls._active += 1

    @classmethod
    def exit(cls) -> None:
        cls._active = max(0, cls._active - 1)
        if cls._active == 0 and cls._saved is not None:
            gc.set_threshold(*cls._saved)
            cls._saved = None


class Job:
    """Run a core generator in napari's thread worker with an activity-dock bar.

    ``on_event`` receives every yielded event in the GUI thread, ``on_done`` the
    generator's return value; errors become notifications. ``cancel()`` stops the
    worker at its next yield (the core generator then checkpoints / cleans up).
    ``activity=False`` (open-ended jobs) or a software-rendered canvas: no napari
    activity bar (``_activity``: its animation costs the job most of a core).
    """

    def __init__(self, func: Callable, *args: Any, description: str,
                 on_event: Callable | None = None, on_done: Callable | None = None,
                 on_finished: Callable | None = None, activity: bool = True,
                 **kwargs: Any) -> None:
        self._cancel_requested = False
        self.cancelled = False
        # our own "errored" handler replaces superqt's default re-raise
        self.worker = create_worker(self._drive, func, args, kwargs,
                                    _start_thread=False,
                                    _connect={"errored": self._errored})
        self.pbar = activity_bar(description, enabled=activity)
        self._on_event = on_event
        self._on_done = on_done
        self._on_finished = on_finished
        self.error: BaseException | None = None
        self.result: Any = None
        self._started = False
        self._finished_flag = False
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.finished.connect(self._finished)
        self._watch_owner(on_event, on_done, on_finished)

    def _watch_owner(self, *callbacks) -> None:
        """Closing the viewer mid-job deletes the dock widgets: then cancel (a
        fine-tune still checkpoints) and drop the callbacks, which would touch deleted
        Qt objects."""
        from qtpy.QtCore import QObject

        owners = {id(o): o for o in (getattr(c, "__self__", None) for c in callbacks)
                  if isinstance(o, QObject)}
        for owner in owners.values():
            owner.destroyed.connect(self._owner_destroyed)

    def _owner_destroyed(self, *_args) -> None:
        self._on_event = self._on_done = self._on_finished = None
        self.cancel()

    def start(self) -> "Job":
        self._started = True
        _QuietGC.enter()
        self._gc_held = True
        self.worker.start()
        return self

    def _drive(self, func, args, kwargs):
        """Run ``func``'s generator in the worker thread; on cancel, close it there.

        Closing raises GeneratorExit at the core generator's current ``yield``: its
        cleanup (the trainer's checkpoint-on-cancel) runs off the GUI thread.
        """
        lower_thread_priority()  # the GUI thread first (_activity)
        gen = func(*args, **kwargs)
        while True:
            if self._cancel_requested:
                gen.close()
                self.cancelled = True
                return _CANCELLED
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            yield event

    def cancel(self) -> None:
        """Stop at the core generator's next yield (its cleanup runs first)."""
        self._cancel_requested = True

    @property
    def running(self) -> bool:
        """True from ``start()`` until the worker has finished (or failed)."""
        return self._started and not self._finished_flag

    def _yielded(self, event: Any) -> None:
        total = getattr(event, "total", None)
        done = getattr(event, "done", None)
        if total and self.pbar.total != total:
            self.pbar.total = total
        if done is not None and total:
            self.pbar.n = min(done, total)
            self.pbar.refresh()
        message = getattr(event, "message", "")
        if message:
            self.pbar.set_description(message[:60])
        if self._on_event is not None:
            self._on_event(event)

    def _returned(self, value: Any) -> None:
        if value is _CANCELLED:
            return
        self.result = value
        if self._on_done is not None:
            self._on_done(value)

    def _errored(self, err: BaseException) -> None:
        self.error = err
        notify_error(err)

    def _finished(self) -> None:
        self._finished_flag = True
        if getattr(self, "_gc_held", False):
            self._gc_held = False
            _QuietGC.exit()
        self.pbar.close()
        if self._on_finished is not None:
            self._on_finished()


def status_label() -> QLabel:
    """A word-wrapped status line with a fixed height (three lines).

    A label that grows when its text wraps re-lays the dock out, and every resize
    repaints the matplotlib canvases below it (~75 ms each on the GUI thread).
    """
    label = QLabel("")
    label.setWordWrap(True)
    label.setFixedHeight(3 * label.fontMetrics().lineSpacing() + 4)
    label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
    return label


def source_layers(viewer) -> list[tuple[str, str]]:
    """(layer name, source path) of the slides/samples opened by napari-seal."""
    out = []
    for layer in viewer.layers:
        meta = layer.metadata.get("napari_seal", {})
        if meta.get("kind") == "slide" and meta.get("source"):
            out.append((layer.name, meta["source"]))
    return out
