"""napari canvas first, then the torch stack: exits 0, or dies in dlopen (the bug).

    python tests/_qt/triton_canvas.py guard|core|noguard

``guard`` imports napari_seal._widgets (which installs the triton guard) before the
torch stack, as docking any napari-seal widget does; ``core`` imports only
``napari_seal`` (the Python API from napari's console); ``noguard`` neither. Prints one
JSON line: whether Mesa's LLVM was mapped and whether triton got loaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

viewer = napari.Viewer(show=True)
viewer.add_image(np.random.default_rng(0).random((256, 256), dtype=np.float32))
app = QApplication.instance()
for _ in range(5):
    app.processEvents()
viewer.screenshot(canvas_only=True)
llvm = "/libLLVM" in Path("/proc/self/maps").read_text()
if sys.argv[1] == "guard":
    import napari_seal._widgets  # noqa: F401  (installs the guard)
elif sys.argv[1] == "core":
    import napari_seal  # noqa: F401  (installs it too)
import torch  # noqa: E402, F401
import torchvision  # noqa: E402, F401

viewer.add_points(np.array([[10.0, 10.0]]))
for _ in range(5):
    app.processEvents()
viewer.screenshot(canvas_only=True)
print(json.dumps({"llvm_mapped": llvm, "triton_loaded": "triton" in sys.modules}))
viewer.close()
