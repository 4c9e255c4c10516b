"""Predicted expression at the spots of an ST sample, next to the measured values.

Re-exported by :mod:`napari_seal.predict.expression` (``spot_predictions``,
``compare_at_spots``, ``measured_expression``). Spot values: from a store, a spot takes
the prediction of the tile that contains its centre (nearest tile centre; NaN when no
tissue tile covers it); from an encoder or a run, spot-centred patches (the encoder's
tile size and pixel size, as in training and ``bench``) are embedded directly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError, GeneQueryError

__all__ = ["compare_at_spots", "measured_expression", "spot_predictions"]


def _nearest_tiles(store: Any, xy: np.ndarray) -> np.ndarray:
    """Index of the tile containing each point (nearest centre), -1 when none."""
    from scipy.spatial import cKDTree

    centres = store.centres_xy
    _, idx = cKDTree(centres).query(xy)
    half = float(store.grid.tile_size_l0) / 2.0
    inside = np.all(np.abs(centres[idx] - xy) <= half, axis=1)
    return np.where(inside, idx, -1)


def _check_same_slide(store: Any, sample: Any) -> None:
    made = store.signature.get("slide", {})
    size = (made.get("width_px"), made.get("height_px"))
    have = (int(sample.slide.width_px), int(sample.slide.height_px))
    if None not in size and tuple(size) != have:
        msg = (
            f"embedding store {store.path} was made from a {size[0]} x {size[1]} px "
            f"slide but sample {sample.name} has a {have[0]} x {have[1]} px slide; "
            "embed this sample's slide (`napari-seal embed SAMPLE --out STORE.zarr`)"
        )
        raise BadInputError(msg)


def spot_predictions(
    sample: Any,
    store_or_encoder: Any,
    head: Any,
    *,
    genes: Sequence[str] | None = None,
    batch_size: int = 64,
    device: str | None = None,
) -> Any:
    """Predicted expression at each spot of an ST sample, as AnnData.

    Parameters
    ----------
    sample
        A :class:`~napari_seal.io.sample.SpatialSample`.
    store_or_encoder
        An embedding store (spot = the tile containing its centre) or an encoder /
        encoder name / run (spot-centred patches embedded directly).
    head
        Expression head, run or saved probe.
    genes
        Genes to predict (default: all of the head's).
    batch_size, device
        For embedding the patches.

    Returns
    -------
    anndata.AnnData
        obs = the sample's spot ids, var = genes, ``X`` float32 (NaN for a spot with
        no tissue tile), ``obsm["spatial"]`` = spot centres.
    """
    import anndata as ad
    import pandas as pd

    from napari_seal.predict.expression import (
        EmbeddingStore,
        _as_store,
        expression_head,
    )

    xy = np.asarray(sample.adata.obsm["spatial"], dtype=np.float64)
    is_store = isinstance(store_or_encoder, EmbeddingStore) or (
        isinstance(store_or_encoder, str | os.PathLike)
        and (Path(store_or_encoder) / "zarr.json").is_file()
    )
    if is_store:
        store = _as_store(store_or_encoder)
        _check_same_slide(store, sample)
        head = expression_head(head, embed_dim=store.embed_dim)
        index = head.index(genes)
        tiles = _nearest_tiles(store, xy)
        ok = (tiles >= 0) & (store.tile_done[np.maximum(tiles, 0)])
        values = np.full((len(xy), len(index)), np.nan, np.float32)
        if ok.any():
            emb = store.read_embeddings(tiles[ok])
            values[ok] = head.output(head.hidden(emb), index)
        method = {"method": "tile", "store": str(store.path)}
    else:
        from napari_seal.embedding.inputs import resolve_encoder
        from napari_seal.models.inference import encode_images
        from napari_seal.tiling.grid import spot_patches

        enc = resolve_encoder(store_or_encoder, device=device).encoder
        head = expression_head(head, embed_dim=int(enc.embed_dim))
        index = head.index(genes)
        patches = spot_patches(sample, size_px=int(enc.tile_px), mpp=float(enc.mpp))
        emb = encode_images(enc, patches, batch_size=batch_size, device=device)
        values = head.output(head.hidden(emb), index)
        method = {
            "method": "patch",
            "encoder": str(enc.name),
            "tile_px": int(enc.tile_px),
            "mpp": float(enc.mpp),
        }
    var = pd.DataFrame(index=[head.genes[i] for i in index])
    out = ad.AnnData(
        X=values, obs=pd.DataFrame(index=sample.adata.obs_names.copy()), var=var
    )
    out.obsm["spatial"] = xy.copy()
    out.uns["napari_seal"] = {
        "kind": "spot_predictions",
        "sample": str(sample.name),
        "head": head.name,
        **method,
    }
    return out


def measured_expression(
    sample: Any, gene: str, *, targets: str = "normalized"
) -> np.ndarray:
    """Measured expression of ``gene`` per spot.

    ``targets="normalized"``: counts / spot total * 1e4, then log1p (removes spot
    depth); ``"hest"``: log1p of raw counts.
    """
    adata = sample.adata
    names = {str(g).upper(): i for i, g in enumerate(adata.var_names)}
    j = names.get(str(gene).upper())
    if j is None:
        msg = (
            f"gene {gene!r} is not measured in sample {sample.name}; pick another gene"
        )
        raise GeneQueryError(msg)
    x = adata.layers.get("counts", adata.X)
    col = x[:, j]
    col = np.asarray(
        col.toarray() if hasattr(col, "toarray") else col, dtype=np.float64
    ).ravel()
    if targets == "hest":
        return np.log1p(col)
    if targets != "normalized":
        msg = f"targets must be 'normalized' or 'hest', got {targets!r}"
        raise BadInputError(msg)
    total = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    return np.log1p(col / np.maximum(total, 1e-12) * 1e4)


def compare_at_spots(
    sample: Any, predicted: Any, gene: str, *, targets: str = "normalized"
) -> float:
    """Pearson r between measured and predicted expression of ``gene`` at spots.

    Parameters
    ----------
    sample
        The ST sample (measured counts).
    predicted
        AnnData from :func:`spot_predictions` (aligned on spot ids).
    gene
        The gene.
    targets
        How measured counts are transformed (see :func:`measured_expression`).

    Returns
    -------
    float
        Pearson r over the spots with a prediction (NaN when either side is constant).
    """
    measured = measured_expression(sample, gene, targets=targets)
    names = {str(g).upper(): i for i, g in enumerate(predicted.var_names)}
    j = names.get(str(gene).upper())
    if j is None:
        msg = f"gene {gene!r} was not predicted; predict it first"
        raise GeneQueryError(msg)
    pos = sample.adata.obs_names.get_indexer(predicted.obs_names)
    pred = np.asarray(predicted.X[:, j], dtype=np.float64).ravel()
    ok = (pos >= 0) & np.isfinite(pred)
    a, b = measured[pos[ok]], pred[ok]
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])
