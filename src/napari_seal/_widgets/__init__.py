"""napari dock widgets and their background jobs: the only code that imports napari/Qt.

:mod:`~napari_seal._widgets.jobs` holds the path-in generators the widgets run in
worker threads (only the widgets use it). Importing this package installs the triton
guard (:mod:`~napari_seal.models.triton_guard`; ``import napari_seal`` installs it
too) before any widget can import torch: on Mesa software OpenGL, triton loaded after
napari's canvas would crash the viewer.
"""

from __future__ import annotations

from napari_seal.models.triton_guard import install_triton_guard

install_triton_guard()
