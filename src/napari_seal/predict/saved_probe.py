"""Saved probe heads: one safetensors file, arrays + a JSON description (no pickle).

A head is a single file (any name; ``.safetensors`` is the usual suffix) written
atomically, so an interrupted save never leaves a half head. Its safetensors
metadata holds ``format = "napari-seal-head"`` and ``description`` = a JSON object
naming the genes, the target mode, the encoder (name, weight file and its sha256,
SEAL run), the ridge alpha and the training samples. ``safetensors`` headers are
plain JSON, so ``python -c "import safetensors; ..."`` or any safetensors viewer
shows the description without napari-seal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError, EncoderMismatchError
from napari_seal.predict.probe import RidgeProbe

__all__ = ["HEAD_FORMAT", "apply_head", "load_head", "load_probe", "save_probe"]

HEAD_FORMAT = "napari-seal-head"
HEAD_FORMAT_VERSION = 1
_ARRAYS = (
    "scaler_mean",
    "scaler_scale",
    "pca_mean",
    "pca_components",
    "coef",
    "offset",
)
_HINT = "make one with `napari-seal bench --train ... --test ... --save-head HEAD`"


def save_probe(path: str | Path, probe: RidgeProbe, meta: dict[str, Any]) -> Path:
    """Write ``probe`` and its description ``meta`` to one safetensors file (atomic).

    Returns
    -------
    The path written.
    """
    from safetensors.numpy import save

    from napari_seal.io.atomic import atomic_write_bytes

    path = Path(path)
    if path.is_dir():
        msg = (
            f"--save-head {path} is a folder; give a file name such as "
            f"{path}/head.safetensors"
        )
        raise BadInputError(msg)
    doc = {
        "format": HEAD_FORMAT,
        "format_version": HEAD_FORMAT_VERSION,
        **meta,
        "alpha_value": probe.alpha,
        "n_pc": probe.n_pc,
        "embed_dim": probe.n_features,
    }
    data = save(
        {k: np.ascontiguousarray(v) for k, v in probe.arrays().items()},
        metadata={"format": HEAD_FORMAT, "description": json.dumps(doc, default=str)},
    )
    return atomic_write_bytes(path, data)


def load_probe(path: str | Path) -> RidgeProbe:
    """Read a head written by :func:`save_probe`; its description lands in ``.meta``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    if not path.is_file():
        msg = f"head {path} is not a file; {_HINT}"
        raise BadInputError(msg)
    data = path.read_bytes()
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta_raw = header.get("__metadata__", {}) or {}
        arrays = load(data)
    except (ValueError, SafetensorError, AttributeError) as err:
        msg = (
            f"{path} is not a napari-seal head (unreadable safetensors: {err}); {_HINT}"
        )
        raise BadInputError(msg) from err
    if meta_raw.get("format") != HEAD_FORMAT:
        msg = f"{path} is a safetensors file but not a napari-seal head; {_HINT}"
        raise BadInputError(msg)
    meta = json.loads(meta_raw.get("description", "{}"))
    missing = [n for n in _ARRAYS if n not in arrays]
    if missing:
        msg = f"head {path} lacks arrays {missing}; {_HINT}"
        raise BadInputError(msg)
    return RidgeProbe(
        **{n: arrays[n] for n in _ARRAYS},
        alpha=float(meta.get("alpha_value", float("nan"))),
        meta=meta,
    )


def load_head(path: str | Path) -> RidgeProbe:
    """Load a probe saved with ``bench(..., save_head=PATH)``.

    ``head.genes`` / ``head.meta`` describe it (genes, targets, encoder, weights hash).
    """
    return load_probe(path)


def apply_head(head: RidgeProbe | str | Path, features: np.ndarray) -> np.ndarray:
    """Predict ``(n, G)`` expression (target units, gene order ``head.genes``).

    Raises
    ------
    EncoderMismatchError
        When the features do not have the dimension the head was fitted on.
    """
    if not isinstance(head, RidgeProbe):
        head = load_head(head)
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[1] != head.n_features:
        enc = head.meta.get("encoder", "?")
        msg = (
            f"features of shape {x.shape} do not fit this head, fitted on "
            f"{head.n_features}-d features of encoder {enc!r}; embed with that encoder"
        )
        raise EncoderMismatchError(msg)
    return head.predict(x).astype(np.float32)
