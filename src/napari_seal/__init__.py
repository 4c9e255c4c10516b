"""napari-seal: SEAL fine-tuning, expression prediction and gene queries for napari.

The calls users make, in the order of the loop (scanpy style: data first, options
keyword-only)::

    import napari_seal as ns

    ns.import_sample("legacy-st", [], counts=..., spots=..., image=...,
                     out="samples/C2")
    sample = ns.open_path("samples/C2")        # a sample folder, an h5ad, or a slide
    run = ns.train([sample], out="runs/seal")
    store = ns.embed(sample, "runs/seal", "C2.zarr")
    ns.predict_expression(sample, "runs/seal", None, "C2.h5ad")
    result = ns.query(sample, "runs/seal", "ERBB2")
    hits = ns.lookup(sample, "runs/seal", at_xy=(x, y), references=[sample])
    report = ns.bench([s2, s3, s4], encoder="default", loso=True)
    ns.export_geojson(store, "runs/seal", "ERBB2", "ERBB2.geojson")

Subpackages are reachable as namespaces (``ns.io``, ``ns.tiling``, ``ns.models``,
``ns.training``, ``ns.embedding``, ``ns.predict``, ``ns.retrieval``, ``ns.evaluate``).
Every failure on bad input raises a subclass of :class:`SealError`.

``import napari_seal`` is light: it never imports torch, napari or Qt. The names
below are bound on first access (then cached in this module, so every access returns
the same object), because the modules that define several of them import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from napari_seal.errors import SealError
from napari_seal.models.triton_guard import install_triton_guard

# before anything can import torch (-> torchvision -> triton): keeps triton's LLVM from
# clashing with Mesa's once an OpenGL canvas exists (docs/napari.md)
install_triton_guard()

try:
    from napari_seal._version import version as __version__
except ImportError:  # pragma: no cover - source tree without a build
    __version__ = "0.0.0"

# public name -> module that defines it
_API = {
    "open_path": "napari_seal.io.open",
    "open_sample": "napari_seal.io.open",
    "open_slide": "napari_seal.io.slide.core",
    "import_sample": "napari_seal.io.convert",
    "train": "napari_seal.training.trainer",
    "embed": "napari_seal.embedding.run",
    "predict_expression": "napari_seal.predict.export",
    "query": "napari_seal.retrieval.gene_query",
    "lookup": "napari_seal.retrieval.spot_lookup",
    "bench": "napari_seal.evaluate.benchmark",
    "export_geojson": "napari_seal.predict.export",
    "export_trident_h5": "napari_seal.predict.export",
    "load_run": "napari_seal.training.runs",
    "create_encoder": "napari_seal.models.factory",
    "list_encoders": "napari_seal.models.registry",
    "SpatialSample": "napari_seal.io.sample",
}
# the attribute name where it differs from the defining function's name
_SOURCE_NAME = {"predict_expression": "write_predictions"}

_SUBPACKAGES = (
    "io",
    "tiling",
    "models",
    "training",
    "embedding",
    "predict",
    "retrieval",
    "evaluate",
)

__all__ = ["SealError", "__version__", *sorted(_API)]


def __getattr__(name: str) -> Any:
    if name in _API:
        module = importlib.import_module(_API[name])
        value = getattr(module, _SOURCE_NAME.get(name, name))
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"napari_seal.{name}")
    else:
        msg = f"module 'napari_seal' has no attribute {name!r}"
        raise AttributeError(msg)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *_SUBPACKAGES})
