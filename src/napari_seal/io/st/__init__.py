"""Spatial-transcriptomics readers behind one contract.

:mod:`~napari_seal.io.st.contract` (``StData``, ``validate_st``, ``build_adata``) is
what every reader returns (re-exported here); :func:`napari_seal.io.st.read.read_st`
dispatches a path to the reader for its kind (h5ad, Space Ranger, legacy ST, HEST).
:mod:`~napari_seal.io.st.grid` estimates the pixel size from the spot grid. May import:
:mod:`napari_seal.errors`, :mod:`napari_seal.io.slide`.
"""

from __future__ import annotations

from napari_seal.io.st.contract import (
    KINDS,
    StData,
    build_adata,
    file_stem,
    read_table,
    require_file,
    validate_st,
    warn_dropped,
)

__all__ = [
    "KINDS",
    "StData",
    "build_adata",
    "file_stem",
    "read_table",
    "require_file",
    "validate_st",
    "warn_dropped",
]
