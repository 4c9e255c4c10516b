"""Generators of the viewing widgets' jobs (Load, Expression, Gene query).

What used to run in their click handlers on the GUI thread (opening a sample and
checking its alignment, computing an overlay and the comparison at spots, reading the
gallery's tiles) takes 0.5-2 s on a loaded machine; the GUI robustness test
(tests/_qt/test_gui_robustness.py) caught the event loop blocked over 1 s. Each
generator here does that work in the worker and returns plain results that the
widget's ``on_done`` turns into layers.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from napari_seal.errors import SealError
from napari_seal.progress import Progress

__all__ = ["iter_compare_at_spots", "iter_expression", "iter_gene_query",
           "iter_open_sample"]


def iter_open_sample(
    *, st: str | None, slide: str | None, mpp: float | None
) -> Generator[Any, None, tuple[Any, Any, str]]:
    """Open a sample (or a slide) and check its alignment: ``(obj, alignment, note)``.

    Off the GUI thread: a flat JPEG/PNG is decoded into the pyramid cache on its first
    opening, and the alignment check reads the whole tissue mask.
    """
    yield Progress("open", 0, None, "samples", "opening")
    from napari_seal.io.open import open_sample
    from napari_seal.io.sample import SpatialSample
    from napari_seal.tiling.qc import check_alignment

    obj = open_sample(st=Path(st) if st else None, slide=Path(slide) if slide else None,
                      mpp=mpp)
    if not isinstance(obj, SpatialSample):
        return obj, None, ""
    yield Progress("open", 0, None, "samples", "checking the alignment")
    try:
        return obj, check_alignment(obj), ""
    except SealError as err:
        return obj, None, f"Alignment check skipped: {err}"


def iter_expression(
    store: Any,
    head: Any,
    gene: str | None = None,
    *,
    spots_source: str | None = None,
    reference: Any = None,
) -> Generator[Any, None, dict]:
    """Open the store and the predictor (objects are reused), then paint ``gene``.

    Returns ``{"store", "head", "reference"}`` plus, with a gene, ``"gene"``,
    ``"image"`` (computed here: napari would compute a lazy image on the GUI thread),
    ``"scale"``, ``"translate"``, ``"uncertainty"`` (the reliability map's image, or
    None when the predictor is not a run with a reference bank: ``"reference"`` is
    then None), and with ``spots_source`` ``"measured"``, ``"predicted"``, ``"r"`` (or
    ``"compare_error"``: the overlay is still shown).
    """
    import numpy as np

    from napari_seal.predict.expression import (
        expression_head,
        expression_image,
        open_store,
    )

    yield Progress("expression", 0, None, "genes", "loading the predictor")
    store = store if hasattr(store, "n_tiles") else open_store(store)
    if reference is None and not hasattr(head, "genes") and Path(head).is_dir():
        reference = _reference_or_none(Path(head))
    head = head if hasattr(head, "genes") else expression_head(head)
    out: dict[str, Any] = {"store": store, "head": head, "reference": reference}
    if gene is None:
        return out
    gene = head.genes[int(head.index([gene])[0])]  # the panel's spelling: ERBB2
    yield Progress("expression", 0, None, "genes", f"predicting {gene}")
    image, out["scale"], out["translate"] = expression_image(store, head, gene)
    out["gene"], out["image"], out["uncertainty"] = gene, np.asarray(image), None
    if reference is not None and gene in reference.panel.genes:
        from napari_seal.predict.reliability import uncertainty_image

        yield Progress("expression", 0, None, "genes", f"reliability of {gene}")
        unc, _, _ = uncertainty_image(store, reference, gene)
        out["uncertainty"] = np.asarray(unc)
    if spots_source:
        from napari_seal.io.open import open_path
        from napari_seal.predict.spots import (
            compare_at_spots,
            measured_expression,
            spot_predictions,
        )

        try:
            sample = open_path(Path(spots_source))
            predicted = spot_predictions(sample, store, head, genes=[gene])
            out["measured"] = measured_expression(sample, gene)
            out["r"] = compare_at_spots(sample, predicted, gene)
        except SealError as err:
            out["compare_error"] = err
            return out
        values = predicted[:, gene].X
        values = values.toarray() if hasattr(values, "toarray") else np.asarray(values)
        out["predicted"] = values.ravel()
    return out


def _reference_or_none(run_dir: Path) -> Any:
    """The run's reliability reference, or None (no bank, not a run): no map then."""
    from napari_seal.predict.reliability import load_reference

    try:
        return load_reference(run_dir)
    except SealError:
        return None


def iter_gene_query(
    source: str, run: str, text: str, *, route: str, store: str | None, top_q: float,
    n_top: int = 12,
) -> Generator[Any, None, dict]:
    """:func:`napari_seal.retrieval.gene_query.iter_query` and the gallery's top tiles.

    Returns ``{"result", "top", "crops"}`` (``crops`` is None, with ``"crops_error"``,
    when the slide's tiles cannot be read: the score map is still shown).
    """
    from napari_seal.io.open import open_path
    from napari_seal.io.sample import SpatialSample
    from napari_seal.retrieval.gene_query import iter_query
    from napari_seal.retrieval.highlight import gallery_crops, top_k_tiles

    result = yield from iter_query(Path(source), Path(run), text, route=route,
                                   store=store, top_q=top_q)
    out: dict[str, Any] = {"result": result, "top": top_k_tiles(result, n_top),
                           "crops": None}
    yield Progress("query", 0, None, "tiles", "reading the top tiles")
    try:
        obj = open_path(Path(source))
        slide = obj.slide if isinstance(obj, SpatialSample) else obj
        out["crops"] = gallery_crops(slide, result.grid, out["top"].tile_ids)
    except SealError as err:
        out["crops_error"] = err
    return out


def iter_compare_at_spots(
    source: str, store: str, model: str, gene: str
) -> Generator[Any, None, dict | None]:
    """Measured vs predicted ``gene`` at the sample's spots whose tiles are computed:
    ``{"gene", "r", "n_spots"}``, or None when ``source`` has no spots."""
    import numpy as np

    from napari_seal.io.open import open_path
    from napari_seal.io.sample import SpatialSample
    from napari_seal.predict.spots import compare_at_spots, spot_predictions

    yield Progress("compare", 0, None, "spots", f"{gene}: measured vs predicted")
    sample = open_path(Path(source))
    if not isinstance(sample, SpatialSample):
        return None
    predicted = spot_predictions(sample, store, model, genes=[gene])
    n = int(np.isfinite(np.asarray(predicted.X, dtype=np.float64)).sum())
    return {"gene": gene, "r": compare_at_spots(sample, predicted, gene), "n_spots": n}
