"""A run's omics encoder: its input space and deterministic omics embeddings.

Shared by the reference bank, the gene query's scoring and exemplar query vectors
(:mod:`napari_seal.retrieval`), the spot lookup and the reliability map.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_seal.errors import GeneQueryError

__all__ = ["encode_expression", "omics_input", "omics_space", "sample_omics_input"]


def omics_space(run: Any) -> str:
    for holder in (
        getattr(run, "config", None),
        getattr(run.panel, "preprocessing", None),
    ):
        value = (
            holder.get("omics_input")
            if isinstance(holder, dict)
            else getattr(holder, "omics_input", None)
        )
        if value:
            return str(value)
    return "log"


def omics_input(run: Any, z: np.ndarray) -> np.ndarray:
    """Map z-scored panel expression to the omics encoder's input space.

    The run's omics encoder reads log-normalised (smoothed) expression, SEAL's input:
    ``x = max(0, mean + z * std)`` (a negative weight cannot ask for less than no
    expression), unless the run records ``omics_input="zscore"``.
    """
    z = np.asarray(z, dtype=np.float32)
    if omics_space(run) == "zscore":
        return z
    return np.maximum(run.panel.mean + z * run.panel.std, 0.0).astype(np.float32)


def sample_omics_input(run: Any, sample: Any) -> np.ndarray:
    """A sample's spots in the omics encoder's input space ``(n_spots, G)``.

    The run's own preprocessing (``GenePanel.expression``: smoothing, 1e4, log1p,
    panel order; missing panel genes 0), z-scored if the run's encoder reads z-scores.
    """
    expr = np.asarray(run.panel.expression(sample), dtype=np.float32)
    if omics_space(run) == "zscore":
        return np.asarray(run.panel.zscore(expr), dtype=np.float32)
    return expr


def encode_expression(run: Any, x: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
    """Deterministic omics embeddings ``(n, D)`` of input-space expression."""
    import torch

    if getattr(run, "omics", None) is None:
        msg = (
            "the run has no omics encoder, so it cannot embed expression; train a "
            "SEAL run with `napari-seal train`, which saves one"
        )
        raise GeneQueryError(msg)
    module = run.omics.eval()
    param = next(module.parameters())
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    # a few profiles go one by one: on CPU, batch-1 matrix-vector products are ~30x
    # faster than a tiny matrix-matrix product (2 ms vs 70 ms for 2 profiles here)
    step = 1 if len(x) <= 8 else batch_size
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), step):
            t = torch.from_numpy(np.ascontiguousarray(x[i : i + step]))
            out.append(
                module.encode(t.to(param.device, param.dtype)).float().cpu().numpy()
            )
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
