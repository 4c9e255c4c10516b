"""Where the GUI thread stalls while a widget job runs (issue 6: budget 100 ms).

A pytest plugin for the widget budget tests. It prints, per job:

- the QTimer lateness ticks (count, median, worst) and the RATIO worst / 100 ms;
- every stall > 80 ms with the main thread's stack and the other threads' stacks,
  sampled by a watchdog thread the moment it notices the GUI thread is late;
- every garbage collection > 20 ms (generation, duration, thread, whether a job held
  the collector quiet), so full collections during a job show up.

Usage (under Xvfb, as the tests run)::

    PYTHONPATH=benchmarks python -m pytest -p diag_event_loop -s -m slow \\
        -k event_loop_budget tests/test_widgets_jobs.py
"""

from __future__ import annotations

import gc
import sys
import threading
import time
import traceback

BUDGET_MS = 100.0
STALL_S = 0.08

_main = threading.main_thread().ident
_last = [time.perf_counter()]
_stalls: list[tuple[float, str, list[str]]] = []
_gc_start: dict[str, float] = {}
_gc_log: list[tuple[int, float, str, object]] = []


def _watchdog(stop: threading.Event) -> None:
    while not stop.is_set():
        time.sleep(0.01)
        gap = time.perf_counter() - _last[0]
        if gap <= STALL_S:
            continue
        frames = sys._current_frames()
        main = (
            "".join(traceback.format_stack(frames[_main])[-6:])
            if _main in frames
            else "?"
        )
        others = [
            "".join(traceback.format_stack(f)[-4:])
            for tid, f in frames.items()
            if tid not in (_main, threading.get_ident())
        ]
        _stalls.append((gap, main, others))
        seen = _last[0]
        while _last[0] == seen and not stop.is_set():  # one report per stall
            time.sleep(0.005)


def _gc_callback(phase: str, info: dict) -> None:
    # keep this minimal: it runs inside the collector
    if phase == "start":
        _gc_start["t"] = time.perf_counter()
        return
    dt = time.perf_counter() - _gc_start.get("t", time.perf_counter())
    if dt > 0.02:
        common = sys.modules.get("napari_seal._widgets._common")
        quiet = common._QuietGC._active if common else None
        _gc_log.append((info["generation"], dt, threading.current_thread().name, quiet))


def pytest_configure(config) -> None:
    gc.callbacks.append(_gc_callback)


def pytest_collection_modifyitems(session, config, items) -> None:
    module = next(
        (m for n, m in sys.modules.items() if n.endswith("test_widgets_jobs")), None
    )
    if module is None:
        return
    probe = module.LatenessProbe
    tick0, start0, stop0 = probe._tick, probe.start, probe.stop
    stop_event = threading.Event()

    def _tick(self):
        _last[0] = time.perf_counter()
        tick0(self)

    def start(self):
        start0(self)
        _last[0] = time.perf_counter()
        stop_event.clear()
        threading.Thread(target=_watchdog, args=(stop_event,), daemon=True).start()

    def stop(self):
        stop0(self)
        stop_event.set()
        late = sorted(self.late) or [0.0]
        print(
            f"\n{len(self.late)} ticks, median {1000 * late[len(late) // 2]:.1f} ms, "
            f"worst {self.worst_ms:.0f} ms; RATIO worst / {BUDGET_MS:.0f} ms = "
            f"{self.worst_ms / BUDGET_MS:.2f}; stalls > {1000 * STALL_S:.0f} ms: "
            f"{len(_stalls)}"
        )
        for gap, main, others in _stalls:
            print(f"--- stall >= {1000 * gap:.0f} ms; main thread:\n{main}")
            for text in others:
                print(f"  [other thread]\n{text}")
        _stalls.clear()

    probe._tick, probe.start, probe.stop = _tick, start, stop


def pytest_sessionfinish(session, exitstatus) -> None:
    print("\ngarbage collections > 20 ms (generation, ms, thread, quiet jobs):")
    for gen, dt, thread, quiet in _gc_log:
        print(f"  gen {gen} {1000 * dt:.0f} ms on {thread}, quiet={quiet}")
