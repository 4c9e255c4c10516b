"""Evaluation: the HEST-style benchmark, SEAL vs frozen, retrieval metrics.

May import everything below it (:mod:`napari_seal.retrieval`,
:mod:`napari_seal.predict`, :mod:`napari_seal.embedding`, :mod:`napari_seal.training`,
:mod:`napari_seal.models`, :mod:`napari_seal.io`); nothing below imports it.
"""

from __future__ import annotations

from napari_seal.evaluate.benchmark import (
    apply_head,
    bench,
    iter_bench,
    load_head,
    loso_bench,
)
from napari_seal.predict.features import (
    DEPTH,
    spot_features,
)

__all__ = [
    "DEPTH",
    "apply_head",
    "bench",
    "iter_bench",
    "load_head",
    "loso_bench",
    "spot_features",
]
