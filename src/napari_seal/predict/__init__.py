"""Predicted expression: heads, per-tile and per-spot predictions, overlays, export.

Owns the expression heads (SEAL decoder, saved ridge probes), the lazy per-gene
overlays painted from an embedding store, spot-level predictions next to measured
values, and the exports (h5ad, TRIDENT h5, GeoJSON). The HEST linear probe on arrays
lives here too (:mod:`~napari_seal.predict.probe`), since a saved probe is a head.
May import: :mod:`napari_seal.embedding`, :mod:`napari_seal.training.runs`,
:mod:`napari_seal.models`, :mod:`napari_seal.tiling`, :mod:`napari_seal.io`.
"""

from __future__ import annotations

from napari_seal.predict.expression import (
    EmbeddingStore,
    expression_head,
    expression_image,
    open_store,
    predict_tiles,
    tile_predictions,
)
from napari_seal.predict.heads import (
    ExpressionHead,
)
from napari_seal.predict.spots import (
    compare_at_spots,
    measured_expression,
    spot_predictions,
)

__all__ = [
    "EmbeddingStore",
    "ExpressionHead",
    "compare_at_spots",
    "expression_head",
    "expression_image",
    "measured_expression",
    "open_store",
    "predict_tiles",
    "spot_predictions",
    "tile_predictions",
]
