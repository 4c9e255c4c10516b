"""Query results on disk: the scores zarr group and the spot-scores CSV.

Part of :mod:`napari_seal.retrieval.gene_query` (which re-exports these names).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError, OutputPathError
from napari_seal.retrieval.gene_signatures import GeneQuery
from napari_seal.retrieval.highlight import ScoreImage
from napari_seal.retrieval.highlight import score_image as paint_scores
from napari_seal.retrieval.scoring import LEVEL_SD

__all__ = [
    "QUERY_FORMAT",
    "QueryResult",
    "read_scores",
    "write_scores",
    "write_spot_scores",
]

QUERY_FORMAT = "napari-seal.query/1"


@dataclass
class QueryResult:
    """Scores of one gene query on every tile of an embedding store.

    Attributes
    ----------
    query
        The resolved query.
    route
        ``"omics"`` or ``"decoder"``.
    scores
        ``(n_tiles,)`` float32 (NaN for tiles not embedded).
    tile_ids, coords
        ``(n_tiles,)`` tile ids and ``(n_tiles, 2)`` level-0 top-left ``(x, y)``.
    grid
        The grid dict (``store.attrs["grid"]``).
    scale_um, translate_um
        Geometry of :func:`score_image` (as the expression overlays).
    run, store
        Where the run and the embedding store are.
    spot_ids, spot_scores
        Per-spot scores on spot-centred patches, when computed.
    uncertainty
        ``(n_tiles,)`` the reliability map of the query (runs with a reference bank,
        :mod:`napari_seal.predict.reliability`), else None.
    """

    query: GeneQuery
    route: str
    scores: np.ndarray
    tile_ids: np.ndarray
    coords: np.ndarray
    grid: dict[str, Any]
    scale_um: tuple[float, float]
    translate_um: tuple[float, float]
    run: str | None = None
    store: str | None = None
    level_sd: float = LEVEL_SD
    contrast: bool = True
    spot_ids: list[str] | None = None
    spot_scores: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    uncertainty: np.ndarray | None = None

    def image(self) -> ScoreImage:
        """The score map (as :func:`napari_seal.retrieval.gene_query.score_image`)."""
        img = paint_scores(self.grid, self.tile_ids, self.scores)
        return ScoreImage(img.image, tuple(self.scale_um), tuple(self.translate_um))

    @property
    def score_name(self) -> str:
        """What the score is, in words."""
        if self.route == "decoder":
            return "weighted mean of predicted z-scores (training statistics)"
        if self.info.get("omics_query") == "exemplar":
            return (
                "cosine(image embedding, mean omics embedding of the training spots "
                "in the query's top quartile"
                + (" minus that of all training spots)" if self.contrast else ")")
            )
        if self.contrast:
            return (
                "cosine(image embedding, omics embedding of the query profile "
                "minus that of the all-mean profile)"
            )
        return "cosine(image embedding, omics embedding of the query profile)"

    def attrs(self) -> dict[str, Any]:
        """JSON-able attributes written with the scores."""
        return {
            "format": QUERY_FORMAT,
            "query": self.query.to_dict(),
            "route": self.route,
            "run": self.run,
            "store": self.store,
            "grid": self.grid,
            "level_sd": float(self.level_sd),
            "contrast": bool(self.contrast),
            "scale_um": list(self.scale_um),
            "translate_um": list(self.translate_um),
            "score": self.score_name,
            **self.info,
        }


def write_spot_scores(
    path: str | os.PathLike, spot_ids: list[str], scores: np.ndarray
) -> Path:
    """Write ``spot_id,score`` CSV (one row per spot, atomically)."""
    from napari_seal.io.atomic import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["spot_id", "score"])
    for sid, value in zip(spot_ids, np.asarray(scores, dtype=np.float64), strict=True):
        writer.writerow([sid, repr(float(value))])
    return atomic_write_text(Path(path), buf.getvalue())


def write_scores(result: QueryResult, path: str | os.PathLike) -> Path:
    """Write a query result as a zarr group, atomically.

    Layout: arrays ``scores`` (n_tiles,) float32, ``tile_ids`` (n_tiles,) int64,
    ``coords`` (n_tiles, 2) int64 (level-0 top-left ``(x, y)``); with spot scores
    also ``spot_scores`` and attr ``spot_ids``; with a reliability map
    ``uncertainty`` (n_tiles,) float32; attrs :meth:`QueryResult.attrs`
    (``format``, ``query``, ``route``, ``run``, ``store``, ``grid``, geometry,
    ``contour``, ``top_tiles``).

    Raises
    ------
    OutputPathError
        The path exists and is not a query result, or cannot be written.
    """
    import zarr

    from napari_seal.io.atomic import checked_output_path

    path = checked_output_path(path)
    if path.exists() and not _is_query_result(path):
        msg = (
            f"{path} exists and is not a query result; choose another --out or "
            "delete it"
        )
        raise OutputPathError(msg)
    from napari_seal.io.atomic import (
        ensure_writable_dir,
        remove_stale_temporaries,
        temporary_prefix,
    )

    ensure_writable_dir(path.parent)
    remove_stale_temporaries(path.parent, name=path.name)  # a killed write's
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(path.name), dir=path.parent))
    try:
        attrs = result.attrs()
        if result.spot_ids is not None:
            attrs["spot_ids"] = list(result.spot_ids)
        group = zarr.create_group(tmp, attributes=attrs, zarr_format=3, overwrite=True)
        group.create_array("scores", data=np.asarray(result.scores, np.float32))
        group.create_array("tile_ids", data=np.asarray(result.tile_ids, np.int64))
        group.create_array("coords", data=np.asarray(result.coords, np.int64))
        if result.spot_scores is not None:
            group.create_array(
                "spot_scores", data=np.asarray(result.spot_scores, np.float32)
            )
        if result.uncertainty is not None:
            group.create_array(
                "uncertainty", data=np.asarray(result.uncertainty, np.float32)
            )
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        msg = f"cannot write {path}: {err.strerror or err}; choose another --out"
        raise OutputPathError(msg) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _is_query_result(path: Path) -> bool:
    try:
        meta = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("attributes", {}).get("format") == QUERY_FORMAT


def read_scores(path: str | os.PathLike) -> QueryResult:
    """Read a result written by :func:`write_scores`."""
    import zarr

    path = Path(path)
    if not _is_query_result(path):
        msg = f"{path} is not a query result; make one with `napari-seal query`"
        raise BadInputError(msg)
    group = zarr.open_group(path, mode="r")
    attrs = dict(group.attrs)
    q = attrs["query"]
    spot = np.asarray(group["spot_scores"][:]) if "spot_scores" in group else None
    info = {
        k: attrs[k]
        for k in ("contour", "top_tiles", "omics_query", "uncertainty")
        if k in attrs
    }
    unc = np.asarray(group["uncertainty"][:]) if "uncertainty" in group else None
    return QueryResult(
        query=GeneQuery(tuple(q["genes"]), tuple(q["weights"]), tuple(q["requested"])),
        route=attrs["route"],
        scores=np.asarray(group["scores"][:]),
        tile_ids=np.asarray(group["tile_ids"][:]),
        coords=np.asarray(group["coords"][:]),
        grid=dict(attrs["grid"]),
        scale_um=tuple(attrs["scale_um"]),
        translate_um=tuple(attrs["translate_um"]),
        run=attrs.get("run"),
        store=attrs.get("store"),
        level_sd=float(attrs.get("level_sd", LEVEL_SD)),
        contrast=bool(attrs.get("contrast", True)),
        spot_ids=attrs.get("spot_ids"),
        spot_scores=spot,
        info=info,
        uncertainty=unc,
    )
