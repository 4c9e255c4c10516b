"""SEAL fine-tuning: expression preprocessing, datasets, losses, the loop, DDP, runs.

:mod:`~napari_seal.training.runs` is the one run-directory protocol (file names, the
DONE marker, loading a run). May import: :mod:`napari_seal.models`,
:mod:`napari_seal.tiling`, :mod:`napari_seal.io`.
"""

from __future__ import annotations

