"""napari-seal: SEAL fine-tuning, expression prediction and gene queries for napari.

``import napari_seal`` is light: it never imports torch, napari or Qt. Heavy modules
are imported lazily on attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    from napari_seal._version import version as __version__
except ImportError:  # pragma: no cover - source tree without a build
    __version__ = "0.0.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "open_slide": "napari_seal.io.slide",
    "Slide": "napari_seal.io.slide",
    "load_sample": "napari_seal.io.hest",
    "read_st": "napari_seal.io.st",
    "import_sample": "napari_seal.io.convert",
    "SpatialSample": "napari_seal.sample",
    "create_encoder": "napari_seal.models.registry",
    "list_encoders": "napari_seal.models.registry",
    "Encoder": "napari_seal.models.registry",
    "make_tile_grid": "napari_seal.tiling",
    "TileGrid": "napari_seal.tiling",
    "train": "napari_seal.training.trainer",
    "iter_train": "napari_seal.training.trainer",
    "TrainConfig": "napari_seal.training.config",
    "bench": "napari_seal.evaluate",
    "embed": "napari_seal.embed",
    "iter_embed": "napari_seal.embed",
    "drain": "napari_seal.progress",
    "Progress": "napari_seal.progress",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return getattr(module, name)
    msg = f"module 'napari_seal' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return __all__
