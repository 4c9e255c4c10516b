"""Layer data for napari, built without importing napari.

Functions here return napari "layer data tuples" ``(data, kwargs, layer_type)``: plain
Python/NumPy/dask objects that the npe2 reader, the sample-data contribution and the
widgets hand to napari. World units are micrometres everywhere:

- the slide image carries ``scale=(mpp, mpp)`` (data in level-0 pixels);
- spot points are given directly in micrometres (``scale=(1, 1)``) with ``size`` = spot
  diameter in micrometres, so slide and spots overlay by construction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari_seal.io.sample import SpatialSample
    from napari_seal.io.slide.core import Slide

__all__ = ["lookup_layer", "sample_layers", "slide_layer", "spot_features",
           "spots_layer"]

LayerDataTuple = tuple[Any, dict[str, Any], str]


def slide_layer(
    slide: Slide, *, name: str | None = None, source: str | None = None
) -> LayerDataTuple:
    """Return the RGB multiscale image layer of a slide, in micrometres.

    Parameters
    ----------
    slide
        The slide; its pixel size must be known.
    name
        Layer name (default: the slide file's stem).
    source
        Path other widgets reopen to compute on this image (a sample folder or the
        slide file; default: the slide file).
    """
    mpp = slide.require_mpp()
    pyramid = slide.as_dask_pyramid()
    data = pyramid if len(pyramid) > 1 else pyramid[0]
    kwargs = {
        "name": name or (slide.path.stem if slide.path is not None else "slide"),
        "rgb": True,
        "multiscale": len(pyramid) > 1,
        "scale": (mpp, mpp),
        "metadata": {"napari_seal": {"kind": "slide", "mpp": mpp,
                                     "mpp_source": slide.mpp_source,
                                     "source": source or (str(slide.path)
                                                          if slide.path else None)}},
    }
    return data, kwargs, "image"


def spot_features(sample: SpatialSample) -> dict[str, np.ndarray]:
    """Per-spot features shown on the points layer (total counts, detected genes)."""
    import scipy.sparse as sp

    x = sample.adata.X
    if sp.issparse(x):
        total = np.asarray(x.sum(axis=1)).ravel()
        detected = np.asarray((x > 0).sum(axis=1)).ravel()
    else:
        total = np.asarray(x).sum(axis=1)
        detected = (np.asarray(x) > 0).sum(axis=1)
    return {
        "spot_id": np.asarray(sample.adata.obs_names, dtype=object),
        "total_counts": total.astype(np.float64),
        "n_genes": detected.astype(np.int64),
    }


def spots_layer(sample: SpatialSample, *, name: str | None = None) -> LayerDataTuple:
    """Return the spots as a Points layer in micrometres, sized to the spot diameter."""
    features = spot_features(sample)
    kwargs = {
        "name": name or f"{sample.name} spots",
        "size": float(sample.spot_diameter_um),
        "features": features,
        "face_color": "total_counts",
        "face_colormap": "viridis",
        "border_width": 0.05,
        "border_color": "white",
        "opacity": 0.6,
        "metadata": {"napari_seal": {"kind": "spots", "sample": sample.name,
                                     "mpp": sample.mpp,
                                     "spot_diameter_um": sample.spot_diameter_um,
                                     "source": sample.metadata.get("path")}},
    }
    return sample.spots_napari_um, kwargs, "points"


def sample_layers(sample: SpatialSample) -> list[LayerDataTuple]:
    """Return the slide image and the spot points of a sample (in that order)."""
    source = sample.metadata.get("path")
    return [
        slide_layer(sample.slide, name=sample.name, source=source),
        spots_layer(sample),
    ]


def query_layers(result: Any, *, top_q: float = 0.1, mpp: float | None = None
                 ) -> list[LayerDataTuple]:
    """Score map + outline of the top ``top_q`` tissue tiles of a gene query.

    With a reliability map (runs with a reference bank) also its ``uncertainty`` image
    layer, hidden until the user shows it.

    Parameters
    ----------
    result
        A :class:`napari_seal.retrieval.gene_query.QueryResult`.
    top_q
        Fraction of tissue tiles outlined (0.1 = the top 10 %).
    mpp
        Slide pixel size, kept in the layers' metadata for the writers.
    """
    from napari_seal.retrieval.highlight import top_fraction_contour

    image, scale, translate = result.image()
    label = result.query.label if hasattr(result.query, "label") else "query"
    meta = {"napari_seal": {"kind": "query", "query": label, "route": result.route,
                            "mpp": mpp}}
    layers: list[LayerDataTuple] = [(image, {
        "name": f"query {label} ({result.route})", "colormap": "turbo",
        "scale": scale, "translate": translate, "opacity": 0.6,
        "metadata": meta}, "image")]
    unc = getattr(result, "uncertainty", None)
    if unc is not None:  # the query's reliability map, off until the user shows it
        from napari_seal.retrieval.highlight import score_image as paint

        layers.append((paint(result.grid, result.tile_ids, unc).image, {
            "name": f"uncertainty {label}", "colormap": "gray", "scale": scale,
            "translate": translate, "opacity": 0.8, "visible": False,
            "metadata": {"napari_seal": {**meta["napari_seal"], "kind": "uncertainty"}},
        }, "image"))
    contours = top_fraction_contour(result.image(), top_q, mpp=mpp)
    if contours.rings_um:
        layers.append((contours.rings_um, {
            "name": f"top {100 * top_q:g}% {label}", "shape_type": "polygon",
            "edge_color": "cyan", "edge_width": max(scale) * 0.35,
            "face_color": "transparent", "metadata": meta}, "shapes"))
    return layers


def lookup_layer(result: dict[str, Any],
                 spot_positions: dict[str, dict[str, tuple[float, float]]], *,
                 size_um: float) -> tuple[LayerDataTuple | None, list[dict[str, Any]]]:
    """The nearest reference spots of an image -> expression lookup as rings on a slide.

    Parameters
    ----------
    result
        :func:`napari_seal.retrieval.spot_lookup.lookup`'s result (its ``neighbours``).
    spot_positions
        For each reference sample shown in the viewer: ``{spot_id: (row, col)}`` in
        world micrometres (where its spots layer draws that spot).
    size_um
        Ring diameter (a little larger than a spot, so the spot stays visible inside).

    Returns
    -------
    (layer, missing)
        A Points layer data tuple of the neighbours found in ``spot_positions``, ringed
        and numbered by rank (``None`` when none is shown), and the neighbours whose
        sample is not shown (their ``sample``/``spot_id``/``rank``).
    """
    shown, missing = [], []
    for item in result.get("neighbours", []):
        pos = spot_positions.get(str(item["sample"]), {}).get(str(item["spot_id"]))
        (shown if pos is not None else missing).append((item, pos))
    missing_items = [item for item, _ in missing]
    if not shown:
        return None, missing_items
    data = np.asarray([pos for _, pos in shown], dtype=np.float64).reshape(-1, 2)
    features = {
        "rank": np.asarray([int(it["rank"]) for it, _ in shown], dtype=np.int64),
        "sample": np.asarray([str(it["sample"]) for it, _ in shown], dtype=object),
        "spot_id": np.asarray([str(it["spot_id"]) for it, _ in shown], dtype=object),
        "similarity": np.asarray([float(it["similarity"]) for it, _ in shown]),
    }
    kwargs = {
        "name": "nearest spots",
        "size": float(size_um),
        "features": features,
        "face_color": "transparent",
        "border_color": "magenta",
        "border_width": 0.08,
        "text": {"string": "{rank}", "color": "magenta", "size": 10,
                 "anchor": "upper_left"},
        "metadata": {"napari_seal": {"kind": "lookup", "space": result.get("space"),
                                     "at_xy": result.get("at_xy")}},
    }
    return (data, kwargs, "points"), missing_items
