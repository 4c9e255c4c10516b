"""What napari's "in progress..." indicator costs a model running beside the viewer.

While any napari progress bar is open, napari's status bar shows an animated GIF
("in progress..."). Every frame of it repaints a widget, and a window holding an
OpenGL canvas is composited through OpenGL: on a software rasteriser (Mesa
llvmpipe: Xvfb, remote desktops, VMs without a GPU) each frame re-composites the
whole window on the CPU. This script measures the default encoder's throughput in a
worker thread of a shown viewer with the slide of the bundled sample, in three
phases of equal length (same process, interleaved):

1. idle viewer (no progress bar);
2. a napari progress bar open (the indicator animates);
3. idle again.

It prints the tiles/s of each phase, the CPU seconds the llvmpipe threads used in
each, and the RATIO tiles/s with the indicator / without (1.0 = free).

Usage (under Xvfb, as the tests run)::

    xvfb-run -a -s "-screen 0 1600x1200x24" python benchmarks/diag_activity_indicator.py
        [--seconds 8] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path


def _thread_cpu(prefix: str) -> float:
    """CPU seconds of this process's threads whose name starts with ``prefix``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for task in Path("/proc/self/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name.startswith(prefix):
            fields = text[text.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="per phase")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    import napari
    import numpy as np
    from napari.utils import progress
    from qtpy.QtCore import QTimer

    from napari_seal.embedding.inputs import resolve_slide
    from napari_seal.io.hest import bundled_sample_path
    from napari_seal.models.factory import create_encoder
    from napari_seal.models.inference import InferenceSession

    slide = resolve_slide(bundled_sample_path())
    viewer = napari.Viewer(show=True)
    viewer.add_image(np.asarray(slide.levels[-1]), name="slide")
    session = InferenceSession(create_encoder("default"), batch_size=args.batch,
                               device="cpu")
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, (args.batch, 224, 224, 3), np.uint8)
    session.warm_up()
    counts: list[int] = [0]
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            session(tiles)
            counts[0] += args.batch

    phases = ["idle", "indicator", "idle"]
    results: list[tuple[str, float, float]] = []
    state: dict = {"i": -1, "bar": None, "t": 0.0, "n": 0, "llvm": 0.0}

    def next_phase() -> None:
        now, n, llvm = time.perf_counter(), counts[0], _thread_cpu("llvmpipe")
        if state["i"] >= 0:
            results.append((phases[state["i"]], (n - state["n"]) / (now - state["t"]),
                            llvm - state["llvm"]))
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None
        state["i"] += 1
        if state["i"] == len(phases):
            stop.set()
            viewer.close()
            return
        if phases[state["i"]] == "indicator":
            state["bar"] = progress(total=0, desc="indicator")
        state.update(t=now, n=n, llvm=llvm)
        QTimer.singleShot(int(args.seconds * 1000), next_phase)

    threading.Thread(target=work, daemon=True).start()
    QTimer.singleShot(1000, next_phase)
    napari.run()
    for name, rate, llvm in results:
        print(f"{name:10s} {rate:6.1f} tiles/s   llvmpipe CPU {llvm:5.2f} s "
              f"in {args.seconds:.0f} s")
    idle = (results[0][1] + results[2][1]) / 2
    print(f"RATIO tiles/s with the indicator / idle viewer: {results[1][1] / idle:.2f}")


if __name__ == "__main__":
    main()
