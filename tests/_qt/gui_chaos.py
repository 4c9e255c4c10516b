"""Random user sessions over the five napari-seal dock widgets (test_gui_robustness.py).

A :class:`ChaosSession` docks Load, Embed, Expression, Gene query and Fine-tune in one
viewer and plays a seeded random sequence of what a user can do: press any button
(disabled ones do nothing, as in the GUI), type empty / bad / valid values into the
fields, change combos and spin boxes, remove layers (also while a job runs), wait, and
at the end either let the jobs finish or close the viewer while one still runs. It
records every action, every uncaught exception and every error notification, and how
late a 50 ms QTimer ever fired (the event loop's longest block).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QPushButton

from napari_seal.io.hest import bundled_sample_path

WIDGETS = ("Load", "Embed", "Expression", "Gene query", "Fine-tune", "Explore")


class Recorder:
    """Uncaught exceptions (GUI and worker threads) and error notifications."""

    def __init__(self):
        self.uncaught: list[str] = []
        self.errors: list[str] = []  # show_error messages (expected: SealError text)

    def excepthook(self, *exc):
        self.uncaught.append("".join(traceback.format_exception(*exc)))

    def thread_hook(self, args):
        self.uncaught.append("".join(traceback.format_exception(
            args.exc_type, args.exc_value, args.exc_traceback)))

    def notification(self, note):
        from napari.utils.notifications import ErrorNotification

        if isinstance(note, ErrorNotification):  # napari's relay of an exception
            self.uncaught.append(f"{type(note.exception).__name__}: {note.exception}")

    def show_error(self, message):
        self.errors.append(str(message))

    @property
    def unexpected(self) -> list[str]:
        """Error messages that came from an exception that is not a SealError."""
        return [m for m in self.errors if m.startswith("napari-seal: unexpected")]


def install(recorder: Recorder, monkeypatch) -> None:
    from napari.utils.notifications import notification_manager

    import napari_seal._widgets._common as common

    monkeypatch.setattr(sys, "excepthook", recorder.excepthook)
    monkeypatch.setattr(threading, "excepthook", recorder.thread_hook)
    real = common.show_error
    monkeypatch.setattr(common, "show_error",
                        lambda msg: (recorder.show_error(msg), real(msg)))
    notification_manager.notification_ready.connect(recorder.notification)
    # a user who opens a file picker and cancels it: never a modal dialog
    from qtpy.QtWidgets import QFileDialog

    for name, value in (("getOpenFileName", ("", "")), ("getSaveFileName", ("", "")),
                        ("getOpenFileNames", ([], "")), ("getExistingDirectory", "")):
        monkeypatch.setattr(QFileDialog, name,
                            staticmethod(lambda *a, _v=value, **k: _v))


class Lateness:
    """A 50 ms QTimer; ``worst_ms``: its latest tick (how long the loop was blocked)."""

    def __init__(self):
        self.worst_ms = 0.0
        self.worst_after = ""
        self.last_action = ""
        self._last = None
        self.timer = QTimer()
        self.timer.setInterval(50)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        if self._last is not None:
            late = 1000 * (now - self._last - 0.05)
            if late > self.worst_ms:
                self.worst_ms, self.worst_after = late, self.last_action
        self._last = now

    def start(self):
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self):
        self.timer.stop()


def modal_dialogs() -> list[str]:
    app = QApplication.instance()
    shown = [type(w).__name__ for w in app.topLevelWidgets()
             if w.isVisible() and w.isModal()]
    if app.activeModalWidget() is not None:
        shown.append(type(app.activeModalWidget()).__name__)
    return shown


class ChaosSession:
    """One viewer, the six widgets, a seeded random sequence of user actions."""

    def __init__(self, viewer, qtbot, rng, workspace: Path, *, run: Path, store: Path,
                 genes: list[str], long_jobs: bool):
        self.viewer, self.qtbot, self.rng = viewer, qtbot, rng
        self.ws = workspace
        self.run, self.store, self.genes = run, store, genes
        self.long_jobs = long_jobs
        self.log: list[str] = []
        self.jobs: list = []
        self.closed = False
        self.n = 0
        self.widgets = {}
        for name in WIDGETS:
            _, widget = viewer.window.add_plugin_dock_widget("napari-seal", name)
            self.widgets[name] = widget
        (workspace / "afile.txt").write_text("not a sample, a run or a store\n")
        self.sample = bundled_sample_path()

    # -- value pools -------------------------------------------------------------
    def _bad_path(self) -> str:
        return str(self.rng.choice([
            "", "   ", self.ws / "missing", self.ws / "afile.txt", self.ws,
            "bad\x00name", "~no-such-user-13/x", self.ws / "afile.txt" / "below",
        ]))

    def _out(self, kind: str) -> str:
        self.n += 1
        good = self.ws / kind / f"{kind[0]}{self.n}"
        suffix = ".zarr" if kind == "stores" else ""
        return self.rng.choice([str(good) + suffix] * 3 + [self._bad_path()])

    def _gene(self) -> str:
        return self.rng.choice(["", "NOTAGENE13", self.genes[0],
                                self.rng.choice(self.genes),
                                self.genes[0].lower(), ",".join(self.genes[:2]),
                                f"{self.genes[0]}:1,{self.genes[1]}:-1", "ERBB2:x",
                                "::,", "\x00"])

    def _set(self, edit, text: str) -> str:
        edit.setText(text)
        return repr(text)

    # -- actions -----------------------------------------------------------------
    def actions(self):
        w = self.widgets
        load, embed, expr, query, ft, ex = (w[n] for n in WIDGETS)
        return {
            "load.bundled": lambda: load.bundled_button.click(),
            "load.open": lambda: (self._set(load.st_edit, self.rng.choice(
                [str(self.sample), self._bad_path()])), load.open_button.click())[0],
            "load.slide": lambda: self._set(load.slide_edit, self.rng.choice(
                [str(next((self.sample / "wsis").iterdir())), self._bad_path()])),
            "load.mpp": lambda: load.mpp_spin.setValue(self.rng.choice([0, 0.5, 100])),
            "load.browse": lambda: [b.click() for b in load.findChildren(QPushButton)
                                    if b.text() == "…"],
            "embed.encoder": lambda: embed.encoder_combo.setCurrentIndex(max(
                0, embed.encoder_combo.findData(self.rng.choice(
                    ["test-vit", "test-vit", "uni", "default"]
                    if self.long_jobs else ["test-vit", "uni"])))),
            "embed.weights": lambda: self._set(embed.weights_edit, self.rng.choice(
                ["", "", self._bad_path()])),
            "embed.run_dir": lambda: self._set(embed.run_edit, self.rng.choice(
                ["", str(self.run), self._bad_path()])),
            "embed.store": lambda: self._set(embed.store_edit, self._out("stores")),
            "embed.batch": lambda: embed.batch_spin.setValue(
                self.rng.choice([1, 7, 64])),
            "embed.run": lambda: embed.run_button.click(),
            "embed.cancel": lambda: embed.cancel_button.click(),
            "expr.store": lambda: self._set(expr.store_edit, self.rng.choice(
                [str(self.store), self._bad_path()] + self._finished("stores"))),
            "expr.head": lambda: self._set(expr.head_edit, self.rng.choice(
                [str(self.run), self._bad_path()] + self._finished("runs"))),
            "expr.load": lambda: expr.load_button.click(),
            "expr.gene": lambda: self._set(expr.gene_edit, self._gene()),
            "expr.show": lambda: expr.show_button.click(),
            "expr.enter": lambda: expr.gene_edit.returnPressed.emit(),
            "expr.cmap": lambda: expr.cmap_combo.setCurrentIndex(self.rng.randrange(5)),
            "expr.compare": lambda: expr.compare_check.toggle(),
            "query.run_dir": lambda: self._set(query.run_edit, self.rng.choice(
                [str(self.run), str(self.run), self._bad_path()])),
            "query.store": lambda: self._set(query.store_edit, self.rng.choice(
                [str(self.store), "", self._bad_path()])),
            "query.text": lambda: self._set(query.query_edit, self._gene()),
            "query.route": lambda: query.route_combo.setCurrentIndex(
                self.rng.randrange(2)),
            "query.q": lambda: query.q_spin.setValue(self.rng.choice([0.01, 0.1, 1.0])),
            "query.run": lambda: query.run_button.click(),
            "query.tile": lambda: (query.gallery.itemClicked.emit(query.gallery.item(0))
                                   if query.gallery.count() else None),
            "query.alt_click": self._alt_click,
            "ft.add": lambda: ft.add_button.click(),
            "ft.add_loaded": lambda: ft.add_loaded_button.click(),
            "ft.encoder": lambda: ft.encoder_combo.setCurrentIndex(max(
                0, ft.encoder_combo.findData(
                    self.rng.choice(["test-vit", "test-vit", "uni"])))),
            "ft.preset": lambda: ft.preset_combo.setCurrentText(
                self.rng.choice(["cpu-smoke", "cpu-smoke", "paper"])),
            "ft.steps": lambda: ft.steps_spin.setValue(self.rng.choice(
                [1, 2, 3] + ([40] if self.long_jobs else []))),
            "ft.epochs": lambda: ft.epochs_spin.setValue(self.rng.choice([0, 1])),
            "ft.out": lambda: self._set(ft.out_edit, self._out("runs")),
            "ft.resume": lambda: ft.resume_check.toggle(),
            "ft.bench": lambda: ft.bench_check.toggle(),
            "ft.train": lambda: ft.train_button.click(),
            "ft.cancel": lambda: ft.cancel_button.click(),
            "explore.model": lambda: ex.model_combo.setCurrentIndex(
                self.rng.randrange(ex.model_combo.count())),
            "explore.gene": lambda: self._set(ex.gene_edit, self._gene()),
            "explore.show": lambda: ex.show_button.click(),
            "explore.enter": lambda: ex.gene_edit.returnPressed.emit(),
            "explore.paint": lambda: ex.paint_combo.setCurrentIndex(
                self.rng.randrange(3)),
            "explore.cmap": lambda: ex.cmap_combo.setCurrentIndex(
                self.rng.randrange(5)),
            "layer.remove": self._remove_layer,
            "layer.remove_all": lambda: self.viewer.layers.clear(),
            "wait": lambda: self.qtbot.wait(self.rng.choice([50, 300, 1000])),
        }

    def _finished(self, kind: str) -> list[str]:
        folder = self.ws / kind
        return [str(p) for p in folder.iterdir()] if folder.is_dir() else []

    def _alt_click(self):
        class Event:
            modifiers = ("Alt",)
            position = (self.rng.uniform(0, 4000), self.rng.uniform(0, 4000))

        return self.widgets["Gene query"]._on_canvas_click(self.viewer, Event())

    def _remove_layer(self):
        if len(self.viewer.layers):
            layer = self.rng.choice(list(self.viewer.layers))
            self.viewer.layers.remove(layer)
            return layer.name
        return None

    def running(self) -> list:
        return [j for j in self.jobs if j.running]

    def _collect_jobs(self):
        if self.closed:  # the widgets are gone; their jobs were collected before
            return
        for widget in self.widgets.values():
            live = getattr(widget, "live", None)  # the Explore dock's live view
            for job in (getattr(widget, "job", None),
                        getattr(widget, "bench_job", None), getattr(live, "job", None)):
                if job is not None and all(job is not j for j in self.jobs):
                    self.jobs.append(job)

    def play(self, n_actions: int, lateness: Lateness) -> None:
        table = self.actions()
        names = sorted(table)
        for i in range(n_actions):
            name = self.rng.choice(names)
            lateness.last_action = f"{i}:{name}"
            # see the action before a crash
            if os.environ.get("NAPARI_SEAL_CHAOS_TRACE"):
                print(f"chaos {i}: {name}", file=sys.stderr, flush=True)
            detail = table[name]()
            if os.environ.get("NAPARI_SEAL_CHAOS_TRACE"):
                print(f"   -> {detail!r}", file=sys.stderr, flush=True)
                for layer in self.viewer.layers:  # what the next draw will see
                    shape = getattr(layer.data, "shape", None)
                    if layer.multiscale:
                        shape = [getattr(d, "shape", None) for d in layer.data]
                    print(f"      {type(layer).__name__} {layer.name!r} {shape} "
                          f"visible={layer.visible}", file=sys.stderr, flush=True)
            self.log.append(f"{name}({detail})" if isinstance(detail, str) else name)
            self._collect_jobs()
            self.qtbot.wait(self.rng.choice([0, 10, 50]))

    def close_mid_job(self) -> str:
        """Start a valid fine-tune (or embedding) and close the viewer while it runs."""
        ft, embed = self.widgets["Fine-tune"], self.widgets["Embed"]
        if not self.running():
            if self.rng.random() < 0.5:
                ft.samples_list.clear()
                ft.add_sample(self.sample)
                ft.encoder_combo.setCurrentIndex(ft.encoder_combo.findData("test-vit"))
                ft.preset_combo.setCurrentText("cpu-smoke")
                ft.steps_spin.setValue(40)
                ft.resume_check.setChecked(False)
                ft.out_edit.setText(str(self.ws / "runs" / "closed-mid-job"))
                ft.train_button.click()
            else:
                load = self.widgets["Load"]
                load.bundled_button.click()
                self.qtbot.waitUntil(lambda: not (load.job and load.job.running),
                                     timeout=60_000)
                embed.encoder_combo.setCurrentIndex(embed.encoder_combo.findData("test-vit"))
                embed.run_edit.setText("")
                embed.weights_edit.setText("")
                store = self.ws / "stores" / "closed-mid-job.zarr"
                embed.store_edit.setText(str(store))
                embed.run_button.click()
            self._collect_jobs()
        self.qtbot.wait(self.rng.choice([100, 1500]))
        kinds = [type(j.worker).__name__ for j in self.running()]
        self.viewer.close()
        self.closed = True
        self.log.append(f"close_viewer(running={len(kinds)})")
        return f"closed with {len(kinds)} running"

    def finish(self, timeout_s: float) -> None:
        """Let the jobs end (cancel what is still running after ``timeout_s``)."""
        end = time.monotonic() + timeout_s
        while self.running() and time.monotonic() < end:
            self.qtbot.wait(50)
            self._collect_jobs()
        for job in self.running():
            job.cancel()
        self.qtbot.waitUntil(lambda: not self.running(), timeout=180_000)
        self._collect_jobs()
