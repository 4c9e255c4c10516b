"""Slide embedding into the resumable zarr store: inputs, the run, the store, dask.

Owns the embedding store (writer AND reader, with its signature and ``done`` flags),
the resolution of what to embed with (an encoder, weights, or a SEAL run), the batch
pipeline (:func:`embed` / :func:`iter_embed`) and its ``dask.distributed`` twin.
May import: :mod:`napari_seal.models`, :mod:`napari_seal.training.runs` (to load a SEAL
run's encoder), :mod:`napari_seal.tiling`, :mod:`napari_seal.io`.
"""

from __future__ import annotations

from napari_seal.embedding.inputs import (
    ResolvedEncoder,
    limit_grid,
    resolve_encoder,
    resolve_slide,
    tiling_for,
)
from napari_seal.embedding.run import (
    embed,
    iter_embed,
)

__all__ = [
    "ResolvedEncoder",
    "embed",
    "iter_embed",
    "limit_grid",
    "resolve_encoder",
    "resolve_slide",
    "tiling_for",
]
