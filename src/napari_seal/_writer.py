"""npe2 writers: File > Save Layers for spots (h5ad, GeoJSON), overlays (GeoJSON, TIFF).

Coordinates written are level-0 slide pixels ``(x, y)``, as QuPath, scanpy and HEST
expect; layers carry micrometres, converted back with the ``mpp`` in their
``metadata["napari_seal"]`` (set by napari-seal's reader and widgets).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError, SealError


def _mpp(meta: dict[str, Any]) -> float:
    mpp = (meta.get("metadata") or {}).get("napari_seal", {}).get("mpp")
    if not mpp:
        msg = (
            "this layer has no pixel size (metadata['napari_seal']['mpp']); save "
            "layers opened or made by napari-seal, or set the metadata"
        )
        raise BadInputError(msg)
    return float(mpp)


def _notify(err: SealError) -> None:
    from napari.utils.notifications import show_error

    show_error(f"napari-seal could not save: {err}")


def write_points(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save a spot layer: ``.h5ad`` (features as obs) or ``.geojson`` (points)."""
    try:
        return [str(_write_points(Path(path), np.asarray(data), meta))]
    except SealError as err:
        _notify(err)
        return []


def _write_points(path: Path, data: np.ndarray, meta: dict[str, Any]) -> Path:
    import pandas as pd

    from napari_seal.io.atomic import atomic_path, atomic_write_text

    mpp = _mpp(meta)
    xy = data[:, -2:][:, ::-1] / mpp  # (row, col) um -> (x, y) level-0 px
    features = pd.DataFrame(meta.get("features") or {})
    ids = (features.pop("spot_id").astype(str).to_numpy() if "spot_id" in features
           else np.array([f"spot_{i}" for i in range(len(xy))]))
    if path.suffix == ".h5ad":
        import anndata as ad

        obs = features.reset_index(drop=True)
        obs.index = pd.Index(ids, name="spot_id")
        adata = ad.AnnData(obs=obs, obsm={"spatial": xy.astype(np.float64)})
        adata.uns["napari_seal"] = {"mpp": mpp, "coordinates": "level-0 pixels (x, y)"}
        with atomic_path(path, suffix=".h5ad") as tmp:
            adata.write_h5ad(tmp)
        return path
    if path.suffix == ".geojson":
        feats = []
        for i, (x, y) in enumerate(xy):
            props = {"name": str(ids[i]), "objectType": "annotation"}
            props.update({k: _jsonable(features[k].iloc[i]) for k in features.columns})
            feats.append({"type": "Feature", "properties": props,
                          "geometry": {"type": "Point",
                                       "coordinates": [float(x), float(y)]}})
        atomic_write_text(path, json.dumps({"type": "FeatureCollection",
                                            "features": feats}))
        return path
    msg = f"cannot save spots as {path.suffix!r}; use .h5ad or .geojson"
    raise BadInputError(msg)


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save an overlay: ``.geojson`` outlines of its top 10% tiles, or a ``.tif``."""
    try:
        return [str(_write_image(Path(path), data, meta))]
    except SealError as err:
        _notify(err)
        return []


def _write_image(path: Path, data: Any, meta: dict[str, Any]) -> Path:
    from napari_seal.io.atomic import atomic_path, atomic_write_text

    if isinstance(data, list):
        msg = "multiscale images (slides) are not overlays; save an overlay layer"
        raise BadInputError(msg)
    values = np.asarray(data, dtype=np.float64)
    if values.ndim != 2:
        msg = f"expected a 2-D overlay (one pixel per tile), got shape {values.shape}"
        raise BadInputError(msg)
    if path.suffix in (".tif", ".tiff"):
        import tifffile

        with atomic_path(path, suffix=".tif") as tmp:
            tags = {"scale_um": list(meta.get("scale", (1, 1))),
                    "translate_um": list(meta.get("translate", (0, 0)))}
            tifffile.imwrite(tmp, values.astype(np.float32), metadata=tags)
        return path
    if path.suffix != ".geojson":
        msg = f"cannot save an overlay as {path.suffix!r}; use .geojson or .tif"
        raise BadInputError(msg)
    from napari_seal.predict.export import gene_polygons

    mpp = _mpp(meta)
    scale = np.asarray(meta.get("scale", (1.0, 1.0)), dtype=np.float64)[-2:]
    translate = np.asarray(meta.get("translate", (0.0, 0.0)), dtype=np.float64)[-2:]
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        msg = "the overlay has no finite values to outline"
        raise BadInputError(msg)
    thr = float(np.quantile(finite, 0.9))
    mask = np.isfinite(values) & (values >= thr)
    label = (meta.get("metadata") or {}).get("napari_seal", {}).get("gene") or meta.get(
        "name", "overlay")
    feats = []
    for exterior, holes in gene_polygons(mask):
        rings = []
        for ring in [exterior, *holes]:  # (col, row) grid -> level-0 px
            x = (translate[1] + ring[:, 0] * scale[1]) / mpp
            y = (translate[0] + ring[:, 1] * scale[0]) / mpp
            rings.append(np.round(np.column_stack([x, y]), 2).tolist())
        feats.append({"type": "Feature",
                      "geometry": {"type": "Polygon", "coordinates": rings},
                      "properties": {"objectType": "annotation",
                                     "name": f"{label} top 10%",
                                     "classification": {"name": str(label)},
                                     "threshold": thr}})
    atomic_write_text(path, json.dumps({"type": "FeatureCollection",
                                        "features": feats}))
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value
