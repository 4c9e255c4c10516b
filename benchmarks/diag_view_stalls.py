"""Where napari's GUI thread is when the lazy view stalls (issue 12: budget 100 ms).

Runs ``bench_view.py``'s whole-slide phase (the shipped model, a fresh workspace,
zoomed out to the slide) with ``diag_event_loop.py``'s watchdog thread beating on the
view's own :class:`~napari_seal._widgets._stall.StallProbe` ticks: whenever the GUI
thread is more than ``--late-ms`` late, it samples the GUI thread's Python stack.
Prints the view's figures, then each sampled stall with the innermost frames and a
count of stalls by their innermost frame.

Usage (under Xvfb, after ``bench_view.py`` wrote the slide)::

    xvfb-run -a -s "-screen 0 1600x1200x24" python benchmarks/diag_view_stalls.py
        [--slide /tmp/napari-seal-bench-view/her2st_tiled_4x4.tif] [--late-ms 70]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import threading
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", default=str(Path(tempfile.gettempdir())
                                           / "napari-seal-bench-view"
                                           / "her2st_tiled_4x4.tif"))
    ap.add_argument("--late-ms", type=float, default=70.0)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    # the widget budget tests' watchdog (diag_event_loop), beating on the view's probe
    import diag_event_loop as watch
    from bench_view import run_whole

    import napari_seal._widgets._stall as stall

    watch.STALL_S = args.late_ms / 1000
    tick = stall.StallProbe._tick

    def beat(self) -> None:
        watch._last[0] = time.perf_counter()
        tick(self)

    stall.StallProbe._tick = beat
    stop = threading.Event()
    threading.Thread(target=watch._watchdog, args=(stop,), daemon=True).start()
    d = run_whole(Path(args.slide), Path(tempfile.mkdtemp(prefix="diag-stalls-")))
    stop.set()
    samples = list(watch._stalls)
    print(f"first preview {d['preview_s']} s, worst stall {d['max_stall_ms']} ms, "
          f"{len(samples)} stalls > {args.late_ms:.0f} ms sampled")
    where = collections.Counter()
    for gap, main_stack, _others in samples:
        lines = [x for x in main_stack.splitlines() if x.strip().startswith("File")]
        inner = lines[-1].strip() if lines else "?"
        where[inner] += 1
        print(f"--- >= {1000 * gap:.0f} ms late; GUI thread:\n{main_stack}")
    print("stalls by innermost frame:")
    for inner, n in where.most_common():
        print(f"  {n} x {inner}")


if __name__ == "__main__":
    main()
