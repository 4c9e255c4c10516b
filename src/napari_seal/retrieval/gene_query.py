"""Gene queries: gene -> image retrieval and image -> expression lookup.

Gene -> image (``docs/queries.md``). A query (one gene, several, or a weighted
signature; :func:`parse_query`) is scored on every tile of an embedding store by one
of two routes that answer different questions:

``decoder``
    *Where does the run predict these genes high?* The run's image->gene decoder
    predicts the query genes per tile; each prediction is z-scored with the panel's
    training statistics and the score is the weight-averaged z-score
    ``sum_g w_g z_g / sum_g |w_g|``.
``omics``
    *Where does the tissue look like the run's training tissue high in the query?*
    With a reference bank (``reference.npz``, written by ``train``) the query vector
    is the mean omics embedding of the training spots in the top quartile of the query
    score minus the mean over all of them (:mod:`napari_seal.retrieval.exemplar`);
    runs without a bank embed a synthetic profile instead (query genes at
    ``level_sd * weight`` SDs, the rest at their training mean, minus the all-mean
    profile). Each tile scores the cosine similarity between its image embedding and
    that vector, in the space CLIP training aligned.

The default (:data:`~napari_seal.retrieval.scoring.DEFAULT_ROUTE`) is the route that
ranked held-out tissue better on her2st (``docs/queries.md``). With a bank, every
result also carries the query's reliability map (``result.uncertainty``,
:mod:`napari_seal.predict.reliability`).

A store's L2-normalised embeddings are cached in memory (float16) and a decoder's
hidden layer by :mod:`napari_seal.predict.expression`, so a repeated query is one
matrix-vector product. Highlighting: :func:`score_image` (the score map, same
geometry as the expression overlays), :func:`top_fraction_contour`,
:func:`top_k_tiles`, :func:`gallery_crops`. Image -> expression: :func:`lookup`.

Examples
--------
>>> from napari_seal.retrieval.gene_query import query  # doctest: +SKIP
>>> result = query("sample/", "run/", "ERBB2,GRB7", out="q.zarr")  # doctest: +SKIP
>>> img, scale_um, translate_um = score_image(result)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError
from napari_seal.progress import Progress, drain
from napari_seal.retrieval.exemplar import has_bank
from napari_seal.retrieval.gene_signatures import GeneQuery
from napari_seal.retrieval.highlight import (
    ScoreImage,
    grid_geometry,
    top_fraction_contour,
    top_k_tiles,
)
from napari_seal.retrieval.highlight import score_image as _paint
from napari_seal.retrieval.results import (
    QueryResult,
    write_scores,
    write_spot_scores,
)
from napari_seal.retrieval.scoring import (
    DEFAULT_ROUTE,
    LEVEL_SD,
    check_store_run,
    load_run,
    parse_run_query,
    require_route,
    resolve_omics_query,
    score_embeddings,
    score_store,
)

__all__ = [
    "iter_query",
    "query",
    "score_image",
    "spot_scores",
]

log = logging.getLogger(__name__)


def score_image(store: Any, scores: np.ndarray | None = None) -> ScoreImage:
    """Paint per-tile scores on the tile grid, like the expression overlays.

    Parameters
    ----------
    store
        A :class:`QueryResult` (then ``scores`` defaults to its scores), an open
        :class:`~napari_seal.predict.expression.EmbeddingStore` or a store path.
    scores
        ``(n_tiles,)`` in the store's tile order.

    Returns
    -------
    ScoreImage
        ``(image, scale_um, translate_um)``: ``(n_rows, n_cols)`` float32 with NaN
        off tissue; napari ``scale`` and ``translate`` in micrometres.
    """
    if isinstance(store, QueryResult):
        values = store.scores if scores is None else scores
        img = _paint(store.grid, store.tile_ids, values)
        return ScoreImage(img.image, tuple(store.scale_um), tuple(store.translate_um))
    from napari_seal.predict.expression import overlay_geometry
    from napari_seal.retrieval.scoring import _open_store

    st = _open_store(store)
    if scores is None:
        msg = "score_image(store, scores) needs the scores of the store's tiles"
        raise BadInputError(msg)
    img = _paint(_grid_dict(st), st.tile_ids, scores)
    scale, translate = overlay_geometry(st)
    return ScoreImage(img.image, tuple(scale), tuple(translate))


def _grid_dict(store: Any) -> dict[str, Any]:
    return dict(store.attrs["grid"])


def _as_sample(source: Any) -> Any:
    """The ST sample behind ``source`` (``None`` for a plain slide)."""
    if hasattr(source, "adata") and hasattr(source, "slide"):
        return source
    if isinstance(source, str | os.PathLike) and Path(source).is_dir():
        from napari_seal.io.hest import load_sample

        return load_sample(Path(source))
    return None


def iter_query(
    source: Any,
    run: Any,
    genes: Any = None,
    *,
    signature: str | os.PathLike | None = None,
    route: str = DEFAULT_ROUTE,
    store: Any = None,
    out: str | os.PathLike | None = None,
    spot_scores_csv: str | os.PathLike | None = None,
    spots: bool = False,
    top_q: float | None = 0.1,
    level_sd: float = LEVEL_SD,
    contrast: bool = True,
    omics_query: str = "auto",
    batch_size: int = 64,
    device: str | None = None,
    mpp: float | None = None,
) -> Generator[Progress, None, QueryResult]:
    """Score a gene query on every tissue tile of a slide; yield progress.

    Parameters
    ----------
    source
        A slide path, a HEST sample folder, a ``Slide`` or a ``SpatialSample``.
    run
        A SEAL run folder or loaded run.
    genes
        The query (``"ERBB2"``, ``"ERBB2,GRB7"``, ``["ERBB2:1", "ESR1:-1"]``, a
        mapping or a :class:`GeneQuery`).
    signature
        A signature file (gene/weight pairs) added to ``genes``.
    route
        ``"omics"`` or ``"decoder"`` (default :data:`~napari_seal.retrieval.scoring.
        DEFAULT_ROUTE`, chosen on leave-one-section-out; see the module docs).
    store
        An embedding store made with the run; ``None`` embeds the slide with the run
        into the workspace store
        (:func:`napari_seal.embedding.inputs.default_store_path`; resumable, reused
        by later queries and by every command that embeds without a named store).
    out
        Write the result as a zarr group (:func:`write_scores`).
    spot_scores_csv
        Also score each spot's centred patch and write ``spot_id,score`` (needs an
        ST sample).
    spots
        Score the spots (``result.spot_scores``) without writing a CSV.
    top_q
        Fraction of tissue tiles outlined in the result's contour (``None``: none).
    level_sd
        Z-score of a query gene of weight 1 (route ``omics``).
    contrast
        Route ``omics``: score against the query's embedding minus that of typical
        tissue (default; see :func:`~napari_seal.retrieval.scoring.query_embedding`).
    omics_query
        Route ``omics``: ``"auto"`` (exemplars when the run has a reference bank, else
        the synthetic profile), ``"exemplar"`` or ``"profile"``.
    batch_size, device, mpp
        Embedding batch size, torch device and a slide pixel-size override.

    Returns
    -------
    QueryResult
    """
    from napari_seal.io.atomic import checked_output_path

    for path in (out, spot_scores_csv):  # refuse an impossible name before any work
        if path is not None:
            checked_output_path(path)
    run = load_run(run)
    require_route(run, route)
    sample = _as_sample(source)
    known = list(sample.adata.var_names) if sample is not None else None
    q = parse_run_query(
        run, genes, signature=signature, known_genes=_known_genes(run, known)
    )
    if (spot_scores_csv is not None or spots) and sample is None:
        msg = (
            "--spot-scores needs an ST sample (a HEST sample folder made by "
            "`napari-seal import`), not a plain slide"
        )
        raise BadInputError(msg)
    from napari_seal.predict.expression import open_store

    if store is None:
        from napari_seal.embedding.inputs import (
            default_store_path,
            resolve_encoder,
            resolve_slide,
        )
        from napari_seal.embedding.run import iter_embed

        slide = resolve_slide(sample if sample is not None else source, mpp=mpp)
        resolved = resolve_encoder(run)
        store = default_store_path(slide, resolved)
        log.info("embedding store: %s", store)
        yield Progress("query", 0, None, message=f"embedding store {store}")
        yield from iter_embed(
            slide, resolved, store, batch_size=batch_size, device=device
        )
    st = store if hasattr(store, "read_embeddings") else open_store(store)
    check_store_run(st, run)
    yield Progress("query", 0, 1, "queries", message=f"scoring {q.label} ({route})")
    scores = score_store(
        st,
        run,
        q,
        route=route,
        level_sd=level_sd,
        contrast=contrast,
        check=False,
        omics_query=omics_query,
    )
    from napari_seal.predict.expression import overlay_geometry

    scale, translate = overlay_geometry(st)
    result = QueryResult(
        query=q,
        route=route,
        scores=scores,
        tile_ids=np.asarray(st.tile_ids),
        coords=np.asarray(st.coords),
        grid=_grid_dict(st),
        scale_um=tuple(scale),
        translate_um=tuple(translate),
        run=_run_path(run),
        store=str(Path(st.path)),
        level_sd=float(level_sd),
        contrast=bool(contrast),
    )
    if top_q is not None:
        result.info["contour"] = _contour_info(result, float(top_q))
    result.info["top_tiles"] = _top_info(result)
    if route == "omics":
        result.info["omics_query"] = resolve_omics_query(run, omics_query)
    if has_bank(run):
        from napari_seal.predict import reliability as rel

        weights = dict(zip(q.genes, q.weights, strict=True))
        nbrs = rel.store_neighbours(st, run)
        result.uncertainty = rel.uncertainty(run, nbrs, weights)
        result.info["uncertainty"] = {
            "method": rel.DEFAULT_METHOD,
            "k_neighbours": rel.K_NEIGHBOURS,
            "units": "SD of the nearest training spots' query scores (z units)",
        }
    yield Progress("query", 1, 1, "queries", message=q.label)
    if spot_scores_csv is not None or spots:
        yield from _spot_stage(
            result, sample, run, batch_size=batch_size, device=device
        )
    if out is not None:
        write_scores(result, out)
    if spot_scores_csv is not None:
        write_spot_scores(spot_scores_csv, result.spot_ids, result.spot_scores)
    return result


def query(
    source: Any,
    run: Any,
    genes: Any = None,
    *,
    progress: Callable[[Progress], None] | None = None,
    **kwargs: Any,
) -> QueryResult:
    """Run :func:`iter_query` to the end (same arguments) and return its result."""
    return drain(iter_query(source, run, genes, **kwargs), progress)


def _known_genes(run: Any, sample_genes: list[str] | None) -> list[str] | None:
    known = getattr(run, "known_genes", None)
    if known is None and sample_genes is None:
        return None
    return [*(known or []), *(sample_genes or [])]


def _run_path(run: Any) -> str | None:
    path = getattr(run, "path", None)
    return str(Path(path).resolve()) if path is not None else None


def _contour_info(result: QueryResult, q: float) -> dict[str, Any]:
    img = score_image(result)
    mpp = grid_geometry(result.grid).slide_mpp
    cont = top_fraction_contour(img, q, mpp=mpp)
    return {
        "q": q,
        "threshold": cont.threshold,
        "n_tiles": cont.n_selected,
        "holes": [bool(h) for h in cont.holes],
        "rings_px": [r.round(3).tolist() for r in cont.rings_px or []],
    }


def _top_info(result: QueryResult, k: int = 16) -> dict[str, Any]:
    top = top_k_tiles(result, k)
    return {
        "tile_ids": top.tile_ids.tolist(),
        "coords": top.coords.tolist(),
        "scores": [float(s) for s in top.scores],
    }


def _spot_stage(
    result: QueryResult, sample: Any, run: Any, *, batch_size: int, device: str | None
) -> Generator[Progress, None, None]:
    ids, values = yield from iter_spot_scores(
        sample,
        run,
        result.query,
        route=result.route,
        level_sd=result.level_sd,
        contrast=result.contrast,
        omics_query=result.info.get("omics_query", "auto"),
        batch_size=batch_size,
        device=device,
    )
    result.spot_ids, result.spot_scores = ids, values


def iter_spot_scores(
    sample: Any,
    run: Any,
    query: GeneQuery,
    *,
    route: str = DEFAULT_ROUTE,
    level_sd: float = LEVEL_SD,
    contrast: bool = True,
    omics_query: str = "auto",
    batch_size: int = 64,
    device: str | None = None,
) -> Generator[Progress, None, tuple[list[str], np.ndarray]]:
    """Score each spot's centred patch (the run's encoder); yield progress."""
    from napari_seal.predict.features import spot_features

    emb = yield from spot_features(
        sample, run.encoder, batch_size=batch_size, device=device
    )
    ids = [str(s) for s in sample.adata.obs_names]
    return ids, score_embeddings(
        run,
        emb,
        query,
        route=route,
        level_sd=level_sd,
        contrast=contrast,
        omics_query=omics_query,
    )


def spot_scores(
    sample: Any,
    run: Any,
    genes: Any,
    *,
    route: str = DEFAULT_ROUTE,
    level_sd: float = LEVEL_SD,
    contrast: bool = True,
    batch_size: int = 64,
    device: str | None = None,
) -> tuple[list[str], np.ndarray]:
    """Query scores at the spots of an ST sample, on spot-centred patches.

    Returns
    -------
    spot_ids : list of str
        Exactly the sample's obs names (legacy ST keeps ``"XxY"``).
    scores : numpy.ndarray
        ``(n_spots,)`` float32, by the chosen route.
    """
    run = load_run(run)
    sample = _as_sample(sample) or sample
    q = parse_run_query(run, genes, known_genes=list(sample.adata.var_names))
    return drain(
        iter_spot_scores(
            sample,
            run,
            q,
            route=route,
            level_sd=level_sd,
            contrast=contrast,
            batch_size=batch_size,
            device=device,
        )
    )
