"""Export an embedding store for other tools.

- ``trident-h5``: an HDF5 file with ``features`` (n, D) float32 and ``coords`` (n, 2)
  int64 level-0 ``(x, y)`` tile top-left corners, the layout TRIDENT and CLAM read
  for slide-level models (MIL). ``coords`` carries ``patch_size`` (tile px),
  ``patch_size_level0`` (level-0 px), ``level0_magnification``,
  ``target_magnification``, ``overlap`` (px at the tile resolution), ``patch_level``
  (0) and ``mpp``; the root carries the same plus the store signature (JSON).
- ``geojson``: a FeatureCollection of Polygons (with holes) in level-0 pixel
  coordinates, the outlines of the tiles whose predicted expression of one gene is at
  or above a threshold. QuPath imports it (File > Import objects) as annotations.
  The threshold is the quantile ``q`` of the on-tissue tile values (default 0.9) or
  an absolute value. Outlines come from marching squares (``skimage.measure.
  find_contours`` at 0.5) on the thresholded tile grid and pass half-way between
  neighbouring tile centres: every selected tile's centre is inside a polygon and
  every other tile's centre outside.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError
from napari_seal.io.atomic import atomic_path, atomic_write_text

__all__ = ["export_geojson", "export_trident_h5", "gene_polygons"]

# 10x objective ~ 1 um/px: the usual magnification <-> pixel size convention
_MAG_UM = 10.0


def _complete_store(store: Any) -> Any:
    from napari_seal.predict.expression import EmbeddingStore, open_store

    store = store if isinstance(store, EmbeddingStore) else open_store(store)
    if not store.complete:
        done = int(np.sum(store.group["done"][:]))
        total = int(store.group["done"].shape[0])
        msg = (
            f"embedding store {store.path} is unfinished ({done} of {total} chunks); "
            "rerun the same `napari-seal embed` command to finish it, then export"
        )
        raise BadInputError(msg)
    return store


def _patch_attrs(store: Any) -> dict[str, Any]:
    grid = store.grid
    slide_mpp = float(grid.slide_mpp)
    tile_px = int(grid.tile_px)
    stride_px = int(grid.stride_px or tile_px)
    return {
        "patch_size": tile_px,
        "patch_size_level0": int(round(float(grid.tile_size_l0))),
        "level0_magnification": round(_MAG_UM / slide_mpp, 3),
        "target_magnification": round(_MAG_UM / float(grid.mpp), 3),
        "overlap": tile_px - stride_px,
        "patch_level": 0,
        "mpp": float(grid.mpp),
        "slide_mpp": slide_mpp,
        "name": Path(str(store.signature.get("slide", {}).get("path") or "slide")).stem,
    }


def export_trident_h5(store: Any, out: str | os.PathLike) -> Path:
    """Write the store's embeddings as a TRIDENT/CLAM features file.

    Parameters
    ----------
    store
        An :class:`~napari_seal.predict.expression.EmbeddingStore` or its path
        (must be complete).
    out
        The ``.h5`` file to write (atomically).

    Returns
    -------
    Path
        ``out``.
    """
    import h5py

    store = _complete_store(store)
    out = Path(out)
    attrs = _patch_attrs(store)
    emb = store.group["embeddings"]
    with atomic_path(out, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
        feats = f.create_dataset("features", shape=emb.shape, dtype=np.float32)
        step = int(store.attrs["chunk_tiles"]) * 8
        for i in range(0, emb.shape[0], step):
            feats[i : i + step] = np.asarray(emb[i : i + step], dtype=np.float32)
        coords = f.create_dataset("coords", data=store.coords.astype(np.int64))
        f.create_dataset("tile_ids", data=store.tile_ids.astype(np.int64))
        for key, value in attrs.items():
            coords.attrs[key] = value
            f.attrs[key] = value
        f.attrs["encoder"] = str(store.signature.get("encoder", {}).get("name", ""))
        f.attrs["signature"] = json.dumps(store.signature)
    return out


def _signed_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _inside(points: np.ndarray, ring: np.ndarray) -> np.ndarray:
    from matplotlib.path import Path as MplPath

    return MplPath(ring).contains_points(points)


def gene_polygons(mask: np.ndarray) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Outline the True cells of a 2-D grid as polygons with holes.

    Parameters
    ----------
    mask
        ``(n_rows, n_cols)`` bool.

    Returns
    -------
    list of (exterior, holes)
        Rings as ``(k, 2)`` float arrays of ``(col, row)`` grid coordinates (closed:
        first point repeated last). Exteriors wind counter-clockwise and holes
        clockwise in ``(x, y)`` axes.
    """
    from skimage.measure import find_contours

    padded = np.pad(np.asarray(mask, dtype=np.float32), 1)
    rings = []
    for contour in find_contours(padded, 0.5, fully_connected="high"):
        xy = contour[:, ::-1] - 1.0  # (row, col) -> (col, row), undo the padding
        if len(xy) < 4:
            continue
        if not np.allclose(xy[0], xy[-1]):
            xy = np.vstack([xy, xy[:1]])
        rings.append(xy)
    # find_contours winds around high regions and holes in opposite senses: in
    # (x, y) axes an outer boundary has a positive signed area, a hole a negative one
    exteriors = [r for r in rings if _signed_area(r) > 0]
    holes = [r for r in rings if _signed_area(r) < 0]
    exteriors.sort(key=_signed_area)  # smallest first: a hole joins the innermost
    assigned: list[list[np.ndarray]] = [[] for _ in exteriors]
    for hole in holes:
        probe = hole[:1]
        for i, ext in enumerate(exteriors):
            if _signed_area(ext) > -_signed_area(hole) and _inside(probe, ext)[0]:
                assigned[i].append(hole)
                break
    return list(zip(exteriors, assigned, strict=True))


def _threshold(
    values: np.ndarray, *, quantile: float | None, value: float | None
) -> float:
    finite = values[np.isfinite(values)]
    if value is not None:
        return float(value)
    q = 0.9 if quantile is None else float(quantile)
    if not 0.0 <= q <= 1.0:
        msg = (
            f"--threshold is a quantile in [0, 1], got {q}; use --threshold-value "
            "for an absolute level"
        )
        raise BadInputError(msg)
    if finite.size == 0:
        msg = "the gene map has no on-tissue tile values; embed the slide first"
        raise BadInputError(msg)
    return float(np.quantile(finite, q))


def export_geojson(
    store: Any,
    head: Any,
    gene: str,
    out: str | os.PathLike,
    *,
    quantile: float | None = 0.9,
    value: float | None = None,
) -> Path:
    """Write GeoJSON outlines of the tiles where ``gene``'s prediction is high.

    Parameters
    ----------
    store
        An :class:`~napari_seal.predict.expression.EmbeddingStore` or its path
        (complete).
    head
        Expression head, SEAL run or saved probe (see
        :func:`~napari_seal.predict.expression.expression_head`).
    gene
        The gene.
    out
        The ``.geojson`` file to write (atomically).
    quantile
        Threshold = this quantile of the on-tissue tile values (default 0.9).
    value
        Absolute threshold (overrides ``quantile``).

    Returns
    -------
    Path
        ``out``.
    """
    from napari_seal.predict.expression import expression_head, expression_image

    store = _complete_store(store)
    head = expression_head(head, embed_dim=store.embed_dim)
    image, _, _ = expression_image(store, head, gene)
    values = np.asarray(image.compute())
    thr = _threshold(
        values, quantile=None if value is not None else quantile, value=value
    )
    mask = np.isfinite(values) & (values >= thr)
    stride = float(store.grid.stride_l0)
    rows, cols = store.rows_cols
    cx = store.centres_xy
    # grid (col, row) -> level-0 px of the tile centre, fitted on the tiles
    ox = float(np.median(cx[:, 0] - cols * stride))
    oy = float(np.median(cx[:, 1] - rows * stride))
    gene_name = head.genes[int(head.index([gene])[0])]
    features = []
    for exterior, holes in gene_polygons(mask):
        rings = []
        for ring in [exterior, *holes]:
            xy = np.column_stack([ox + ring[:, 0] * stride, oy + ring[:, 1] * stride])
            rings.append(np.round(xy, 2).tolist())
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {
                    "objectType": "annotation",
                    "name": f"{gene_name} >= {thr:.4g}",
                    "classification": {"name": gene_name, "color": [220, 40, 40]},
                    "gene": gene_name,
                    "threshold": thr,
                    "quantile": None if value is not None else quantile,
                },
            }
        )
    doc = {
        "type": "FeatureCollection",
        "features": features,
        "properties": {
            "gene": gene_name,
            "threshold": thr,
            "n_tiles": int(mask.sum()),
            "store": str(store.path),
            "coordinates": "level-0 pixels (x, y)",
        },
    }
    atomic_write_text(Path(out), json.dumps(doc))
    return Path(out)


def _write_h5ad(adata: Any, path: Path) -> Path:
    with atomic_path(path, suffix=".h5ad") as tmp:
        adata.write_h5ad(tmp)
    return path


def _add_uncertainty(tiles: Any, store: Any, run: Any) -> None:
    """Put the reliability map in ``tiles.layers["uncertainty"]`` (runs with a bank)."""
    from napari_seal.predict import reliability as rel
    from napari_seal.training.reference_bank import has_bank

    genes = [str(g) for g in tiles.var_names]
    if run is None or not has_bank(run) or not set(genes) <= set(run.panel.genes):
        return
    tiles.layers["uncertainty"] = rel.tile_uncertainty(store, run, genes)
    tiles.uns["napari_seal"]["uncertainty"] = {
        "method": rel.DEFAULT_METHOD,
        "k_neighbours": rel.K_NEIGHBOURS,
        "units": "SD of the nearest training spots' z-scores",
        "reference_spots": int(run.bank.n_spots),
    }


def write_predictions(
    source: Any,
    model: Any,
    head: Any,
    out: str | os.PathLike,
    *,
    store: str | os.PathLike | None = None,
    genes: list[str] | None = None,
    batch_size: int = 64,
    device: str | None = None,
    mpp: float | None = None,
    max_tiles: int | None = None,
    progress: Any = None,
) -> dict[str, Path]:
    """Predict expression per tile (and per spot for an ST sample); write h5ad files.

    Parameters
    ----------
    source
        A HEST sample folder / ``SpatialSample`` (spots + slide) or a slide.
    model
        Encoder name, ``Encoder``, SEAL run folder or loaded run.
    head
        The expression head: the run itself, a run folder or a saved probe.
    out
        ``OUT.h5ad``. For an ST sample it holds the per-spot predictions (obs = the
        sample's spot ids) and the per-tile predictions go to ``OUT.tiles.h5ad``; for
        a bare slide ``OUT.h5ad`` holds the per-tile predictions. With a SEAL run
        that has a reference bank the per-tile file carries the reliability map as
        ``layers["uncertainty"]`` (:mod:`napari_seal.predict.reliability`).
    store
        Embedding store to use or create (default: the workspace store of this
        slide and model, :func:`napari_seal.embedding.inputs.default_store_path`;
        resumed when it exists with the same inputs).
    genes
        Genes to write (default: all of the head's).
    batch_size, device, mpp, max_tiles
        Passed to :func:`napari_seal.embedding.run.embed`.
    progress
        Progress callback.

    Returns
    -------
    dict
        ``{"tiles": Path, "spots": Path (ST samples), "store": Path}``.
    """
    from napari_seal.embedding.inputs import (
        default_store_path,
        resolve_encoder,
        resolve_slide,
    )
    from napari_seal.embedding.run import embed
    from napari_seal.io.atomic import checked_output_path
    from napari_seal.io.sample import SpatialSample
    from napari_seal.predict.expression import (
        expression_head,
        open_store,
        tile_predictions,
    )
    from napari_seal.predict.spots import compare_at_spots, spot_predictions

    out = checked_output_path(out)
    base = out.with_suffix("") if out.suffix == ".h5ad" else out
    sample = source
    if isinstance(source, str | os.PathLike) and (
        Path(source).is_dir() or Path(source).suffix == ".h5ad"
    ):
        from napari_seal.io.hest import load_sample

        sample = load_sample(Path(source), mpp=mpp)
    is_sample = isinstance(sample, SpatialSample)
    resolved = resolve_encoder(model, device=device)
    head = expression_head(
        head if head is not None else resolved.run,
        embed_dim=int(resolved.encoder.embed_dim),
    )
    head.index(genes)  # fail early on unknown genes
    if store is not None:
        store_path = Path(store)
    else:
        slide = resolve_slide(sample, mpp=mpp)
        store_path = default_store_path(slide, resolved, max_tiles=max_tiles)
    embed(
        sample,
        resolved,
        store_path,
        batch_size=batch_size,
        device=device,
        mpp=mpp,
        max_tiles=max_tiles,
        progress=progress,
    )
    opened = open_store(store_path)
    tiles = tile_predictions(opened, head, genes=genes)
    _add_uncertainty(tiles, opened, getattr(resolved, "run", None))
    written = {"store": store_path}
    if not is_sample:
        written["tiles"] = _write_h5ad(tiles, out)
        return written
    written["tiles"] = _write_h5ad(tiles, Path(f"{base}.tiles.h5ad"))
    spots = spot_predictions(
        sample, resolved, head, genes=genes, batch_size=batch_size, device=device
    )
    measured = {str(g).upper() for g in sample.adata.var_names}
    spots.var["pearson_r"] = [
        compare_at_spots(sample, spots, g) if g.upper() in measured else np.nan
        for g in spots.var_names
    ]
    spots.uns["napari_seal"]["tiles_file"] = written["tiles"].name
    written["spots"] = _write_h5ad(spots, out)
    return written
