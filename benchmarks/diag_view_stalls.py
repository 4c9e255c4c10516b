"""Where napari's GUI thread is when the lazy view stalls (issue 12: budget 100 ms).

Runs ``bench_view.py``'s whole-slide phase (the shipped model, a fresh workspace,
zoomed out to the slide) with a watchdog thread beating on the view's own
:class:`~napari_seal._widgets._stall.StallProbe` ticks: whenever the GUI thread is
more than ``--late-ms`` late, it samples the GUI thread's Python stack. Prints the
view's figures, then each sampled stall with the innermost frames and a count of
stalls by their innermost frame.

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
import traceback
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", default=str(Path(tempfile.gettempdir())
                                           / "napari-seal-bench-view"
                                           / "her2st_tiled_4x4.tif"))
    ap.add_argument("--late-ms", type=float, default=70.0)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_view import run_whole

    import napari_seal._widgets._stall as stall

    last: list[float | None] = [None]
    main_id = threading.main_thread().ident
    samples: list[tuple[float, list[str]]] = []
    tick = stall.StallProbe._tick

    def beat(self) -> None:
        last[0] = time.perf_counter()
        tick(self)

    stall.StallProbe._tick = beat

    def watchdog() -> None:
        while True:
            time.sleep(0.005)
            if last[0] is None or time.perf_counter() - last[0] <= args.late_ms / 1e3:
                continue
            frame = sys._current_frames().get(main_id)
            stack = traceback.format_stack(frame)[-4:] if frame else ["?"]
            seen = last[0]
            while last[0] == seen:  # one sample per stall
                time.sleep(0.002)
            samples.append((1000 * (last[0] - seen), stack))

    threading.Thread(target=watchdog, daemon=True).start()
    d = run_whole(Path(args.slide), Path(tempfile.mkdtemp(prefix="diag-stalls-")))
    print(f"first preview {d['preview_s']} s, worst stall {d['max_stall_ms']} ms, "
          f"{len(samples)} stalls > {args.late_ms:.0f} ms sampled")
    where = collections.Counter()
    for gap, stack in samples:
        inner = stack[-1].strip().splitlines()[0]
        where[inner] += 1
        print(f"--- ~{gap:.0f} ms between ticks; innermost frames:\n{''.join(stack)}")
    print("stalls by innermost frame:")
    for inner, n in where.most_common():
        print(f"  {n} x {inner}")


if __name__ == "__main__":
    main()
