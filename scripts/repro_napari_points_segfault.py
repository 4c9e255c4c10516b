"""Reproduce the SIGSEGV that ends slow random widget sessions 1320 and 1321.

Plain napari, none of napari-seal's code: an image and a Points layer, the image
removed, then the canvas drawn at a few pixels wide. Under Xvfb with Mesa's llvmpipe
(this project's test machines) the draw of the points' ``Markers`` visual segfaults in
``vispy.gloo.glir``; with the image kept, or with only the points ever added, it does
not. In the random sessions the canvas gets that narrow when the docks take the width.

Usage::

    xvfb-run -a python scripts/repro_napari_points_segfault.py [--keep-image]

Prints ``ok`` when the draw survives; otherwise Python's fault handler prints the stack.
"""

from __future__ import annotations

import faulthandler
import sys

import numpy as np


def main(argv: list[str]) -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    faulthandler.enable()
    viewer = napari.Viewer(show=True)
    viewer.add_image(np.zeros((512, 512, 3), np.uint8), rgb=True, scale=(5.5, 5.5))
    points = np.random.default_rng(0).uniform(0, 2800, (187, 2))
    viewer.add_points(points, size=100, border_width=0.05, opacity=0.6)
    for _ in range(10):
        QApplication.processEvents()
    if "--keep-image" not in argv:
        viewer.layers.remove(viewer.layers[0])
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFixedSize(3, 400)
    for _ in range(10):
        QApplication.processEvents()
    canvas.update()
    for _ in range(10):
        QApplication.processEvents()
    print("ok", flush=True)
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
