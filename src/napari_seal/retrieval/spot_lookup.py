"""Image -> expression: the reference spots nearest to a tissue region.

A region (a point: the patch centred on it; a polygon: the tiles inside it, averaged)
is embedded with the run's encoder and compared with every spot of one or more
reference ST samples, in one of three ways (``space``):

``image`` (default)
    cosine with the reference spots' own image embeddings (their spot-centred
    patches, same encoder): "which measured spots look most like this region".
    Same-modality neighbours are the most reliable and what a user can check by eye;
    they do not depend on how well training aligned the two modalities.
``omics``
    cosine with the omics encoder's embeddings of the reference spots' measured
    expression (the shared space): "which measured profiles does this region's
    image embedding align with". Cross-modal; its quality is the alignment's (see the
    Recall@k of ``benchmarks/bench_gene_query_her2st.py``).
``both``
    the mean of the two cosines.

The k nearest spots' measured expression (raw counts normalised to 1e4 per spot, then
``log1p``, unsmoothed) is summarised as the mean over the k spots of the top genes,
and the genes most enriched against all reference spots.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError
from napari_seal.progress import Progress, drain
from napari_seal.retrieval.scoring import (
    _unit,
    encode_expression,
    load_run,
    sample_omics_input,
)

__all__ = ["SPACES", "iter_lookup", "lookup", "parse_region", "region_embedding"]

SPACES = ("image", "omics", "both")
#: a polygon is covered by at most this many tiles (the step grows beyond)
MAX_REGION_TILES = 256
_REF_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_REF_CACHE_SIZE = 16


def parse_region(at_xy: Any) -> np.ndarray:
    """``(2,)`` point or ``(n >= 3, 2)`` polygon, level-0 ``(x, y)`` pixels.

    Accepts ``(x, y)``, an ``(n, 2)`` array, or text ``"X,Y"`` / ``"X1,Y1;X2,Y2;..."``.

    Raises
    ------
    BadInputError
        Not numbers, not finite, or a "polygon" of two points.
    """
    if isinstance(at_xy, str):
        try:
            pts = [
                [float(v) for v in p.split(",")] for p in at_xy.split(";") if p.strip()
            ]
        except ValueError:
            pts = None
        if not pts or any(len(p) != 2 for p in pts):
            msg = (
                f"cannot read the region {at_xy!r}; write X,Y (level-0 pixels) or a "
                "polygon X1,Y1;X2,Y2;X3,Y3"
            )
            raise BadInputError(msg)
        at_xy = pts
    arr = np.asarray(at_xy, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if not (
        (arr.ndim == 1 and arr.size == 2)
        or (arr.ndim == 2 and arr.shape[1] == 2 and arr.shape[0] >= 3)
    ):
        msg = (
            f"a region is a point (x, y) or a polygon of >= 3 (x, y) vertices, got "
            f"shape {arr.shape}"
        )
        raise BadInputError(msg)
    if not np.all(np.isfinite(arr)):
        msg = "the region's coordinates must be finite numbers (level-0 pixels)"
        raise BadInputError(msg)
    return arr


def _slide_of(source: Any) -> Any:
    if hasattr(source, "slide") and hasattr(source, "adata"):
        return source.slide
    from napari_seal.embedding.inputs import resolve_slide

    return resolve_slide(source)


def _encode(
    run: Any, patches: np.ndarray, *, batch_size: int, device: str | None
) -> np.ndarray:
    from napari_seal.models.inference import encode_images

    return np.asarray(
        encode_images(run.encoder, patches, batch_size=batch_size, device=device),
        dtype=np.float32,
    )


def region_embedding(
    slide: Any,
    run: Any,
    region: np.ndarray,
    *,
    store: Any = None,
    batch_size: int = 64,
    device: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed a region with the run's encoder: ``(D,)`` and how it was made.

    A point is the patch centred on it (the encoder's tile size and pixel size). A
    polygon is the mean embedding of the tiles whose centres fall inside it: the
    store's tiles when a store is given, otherwise a grid of patches at the encoder's
    tile step (coarser when more than :data:`MAX_REGION_TILES` would be needed); a
    polygon smaller than one tile falls back to the patch at its centroid.
    """
    enc = run.encoder
    tile_px, enc_mpp = int(enc.tile_px), float(enc.mpp)
    if region.ndim == 1:
        patch = slide.read_patch(
            float(region[0]), float(region[1]), size_px=tile_px, mpp_out=enc_mpp
        )
        emb = _encode(run, np.array(patch)[None], batch_size=batch_size, device=device)[
            0
        ]
        return emb, {"method": "patch", "n_tiles": 1}
    from matplotlib.path import Path as MplPath

    poly = MplPath(region)
    if store is not None:
        from napari_seal.retrieval.scoring import check_store_run

        check_store_run(store, run)
        inside = np.flatnonzero(poly.contains_points(store.centres_xy))
        inside = inside[store.tile_done[inside]]
        if inside.size:
            emb = store.read_embeddings(inside).mean(axis=0)
            return emb.astype(np.float32), {
                "method": "store tiles",
                "n_tiles": int(inside.size),
            }
    step = tile_px * enc_mpp / float(slide.require_mpp())
    lo, hi = region.min(axis=0), region.max(axis=0)
    n_est = np.prod(np.maximum(1.0, (hi - lo) / step))
    if n_est > MAX_REGION_TILES:
        step *= float(np.sqrt(n_est / MAX_REGION_TILES))
    xs = np.arange(lo[0] + step / 2, hi[0], step)
    ys = np.arange(lo[1] + step / 2, hi[1], step)
    centres = np.array([(x, y) for y in ys for x in xs], dtype=np.float64).reshape(
        -1, 2
    )
    centres = centres[poly.contains_points(centres)] if len(centres) else centres
    if len(centres) == 0:
        centres = region.mean(axis=0, keepdims=True)
    patches = np.stack(
        [
            slide.read_patch(float(x), float(y), size_px=tile_px, mpp_out=enc_mpp)
            for x, y in centres
        ]
    )
    emb = _encode(run, patches, batch_size=batch_size, device=device).mean(axis=0)
    return emb, {"method": "patches", "n_tiles": len(centres)}


def _sample_key(sample: Any) -> str:
    try:
        ident = sample.slide.identity()
    except (AttributeError, OSError):
        ident = {}
    return json.dumps(
        [str(sample.name), ident, int(sample.adata.n_obs)], sort_keys=True, default=str
    )


def _run_key(run: Any) -> str:
    path = getattr(run, "path", None)
    return str(Path(path).resolve()) if path is not None else f"id:{id(run.encoder)}"


def _cached(key: tuple, make: Callable[[], Any]) -> Generator[Progress, None, Any]:
    if key in _REF_CACHE:
        _REF_CACHE.move_to_end(key)
        return _REF_CACHE[key]
    value = yield from make()
    _REF_CACHE[key] = value
    while len(_REF_CACHE) > _REF_CACHE_SIZE:
        _REF_CACHE.popitem(last=False)
    return value


def reference_embeddings(
    sample: Any, run: Any, kind: str, *, batch_size: int = 64, device: str | None = None
) -> Generator[Progress, None, np.ndarray]:
    """Image (``kind="image"``) or omics embeddings ``(n_spots, D)`` of the spots.

    Kept in a small in-memory cache keyed by sample and run, so repeated lookups
    against the same references embed them once.
    """

    def make_image() -> Generator[Progress, None, np.ndarray]:
        from napari_seal.predict.features import spot_features

        return (
            yield from spot_features(
                sample, run.encoder, batch_size=batch_size, device=device
            )
        )

    def make_omics() -> Generator[Progress, None, np.ndarray]:
        yield Progress("lookup", 0, None, message=f"omics embeddings of {sample.name}")
        return encode_expression(run, sample_omics_input(run, sample))

    make = make_image if kind == "image" else make_omics
    return (yield from _cached((_run_key(run), _sample_key(sample), kind), make))


def _measured(sample: Any) -> tuple[list[str], Any]:
    from napari_seal.predict.probe import make_targets, raw_counts

    genes = [str(g).upper() for g in sample.adata.var_names]
    return genes, make_targets(raw_counts(sample.adata), mode="normalized")


def _summarise(
    refs: list[Any], picks: list[tuple[int, int]], n_genes: int
) -> dict[str, Any]:
    """Mean log1p CP10k over the picked spots vs over all reference spots."""
    universe: dict[str, int] = {}
    per_sample = []
    for sample in refs:
        genes, x = _measured(sample)
        for g in genes:
            universe.setdefault(g, len(universe))
        per_sample.append((genes, x))
    g_all = len(universe)
    pick_sum, pick_n = np.zeros(g_all), np.zeros(g_all)
    all_sum, all_n = np.zeros(g_all), np.zeros(g_all)
    for s, (genes, x) in enumerate(per_sample):
        cols = np.asarray([universe[g] for g in genes])
        rows = [spot for si, spot in picks if si == s]
        np.add.at(all_sum, cols, np.asarray(x.sum(axis=0)).ravel())
        np.add.at(all_n, cols, x.shape[0])
        if rows:
            np.add.at(pick_sum, cols, np.asarray(x[rows].sum(axis=0)).ravel())
            np.add.at(pick_n, cols, len(rows))
    names = np.asarray(list(universe))
    mean = np.divide(pick_sum, pick_n, out=np.full(g_all, np.nan), where=pick_n > 0)
    ref = np.divide(all_sum, all_n, out=np.full(g_all, np.nan), where=all_n > 0)
    diff = mean - ref
    top = np.argsort(-np.nan_to_num(mean, nan=-np.inf), kind="stable")[:n_genes]
    enr = np.argsort(-np.nan_to_num(diff, nan=-np.inf), kind="stable")[:n_genes]
    return {
        "unit": "log1p CP10k (measured counts normalised to 1e4 per spot, unsmoothed)",
        "top_genes": [{"gene": str(names[i]), "mean": float(mean[i])} for i in top],
        "enriched_genes": [
            {
                "gene": str(names[i]),
                "mean": float(mean[i]),
                "reference_mean": float(ref[i]),
                "difference": float(diff[i]),
            }
            for i in enr
        ],
    }


def iter_lookup(
    source: Any,
    run: Any,
    *,
    at_xy: Any,
    references: Sequence[Any],
    k: int = 10,
    space: str = "image",
    n_genes: int = 20,
    store: Any = None,
    batch_size: int = 64,
    device: str | None = None,
) -> Generator[Progress, None, dict[str, Any]]:
    """Find the reference spots nearest to a region, with progress (see ``lookup``)."""
    if space not in SPACES:
        msg = f"space {space!r} is not a lookup space; use one of {', '.join(SPACES)}"
        raise BadInputError(msg)
    if k < 1:
        msg = f"k={k} must be at least 1"
        raise BadInputError(msg)
    if not references:
        msg = (
            "a lookup needs at least one reference ST sample (--reference "
            "SAMPLE_DIR), whose spots are the answers"
        )
        raise BadInputError(msg)
    run = load_run(run)
    if space != "image":
        from napari_seal.retrieval.scoring import require_route

        require_route(run, "omics")
    region = parse_region(at_xy)
    slide = _slide_of(source)
    if store is not None and not hasattr(store, "read_embeddings"):
        from napari_seal.predict.expression import open_store

        store = open_store(store)
    yield Progress("lookup", 0, None, message="embedding the region")
    emb, how = region_embedding(
        slide, run, region, store=store, batch_size=batch_size, device=device
    )
    refs = [_as_reference(r) for r in references]
    kinds = ["image", "omics"] if space == "both" else [space]
    sims: list[np.ndarray] = []
    per_kind: dict[str, list[np.ndarray]] = {kind: [] for kind in kinds}
    for ref in refs:
        parts = []
        for kind in kinds:
            ref_emb = yield from reference_embeddings(
                ref, run, kind, batch_size=batch_size, device=device
            )
            s = _unit(ref_emb) @ _unit(emb)
            per_kind[kind].append(s)
            parts.append(s)
        sims.append(np.mean(parts, axis=0))
    owner = np.concatenate([np.full(len(s), i) for i, s in enumerate(sims)])
    local = np.concatenate([np.arange(len(s)) for s in sims])
    flat = np.concatenate(sims)
    order = np.argsort(-flat, kind="stable")[:k]
    neighbours = []
    for rank, j in enumerate(order, start=1):
        si, spot = int(owner[j]), int(local[j])
        ref = refs[si]
        item = {
            "rank": rank,
            "sample": str(ref.name),
            "spot_id": str(ref.adata.obs_names[spot]),
            "similarity": float(flat[j]),
            "xy": [float(v) for v in ref.spots_xy[spot]],
        }
        if space == "both":
            for kind in kinds:
                item[f"{kind}_similarity"] = float(per_kind[kind][si][spot])
        neighbours.append(item)
    picks = [(int(owner[j]), int(local[j])) for j in order]
    yield Progress("lookup", 1, 1, message="done")
    return {
        "source": str(getattr(slide, "path", None) or getattr(source, "name", source)),
        "run": _run_key(run),
        "at_xy": region.tolist() if region.ndim == 1 else None,
        "polygon": region.tolist() if region.ndim == 2 else None,
        "region": how,
        "space": space,
        "k": int(k),
        "references": [str(r.name) for r in refs],
        "neighbours": neighbours,
        "expression": _summarise(refs, picks, n_genes),
    }


def _as_reference(ref: Any) -> Any:
    if hasattr(ref, "adata") and hasattr(ref, "slide"):
        return ref
    if isinstance(ref, str | os.PathLike) and Path(ref).is_dir():
        from napari_seal.io.hest import load_sample

        return load_sample(Path(ref))
    msg = (
        f"reference {ref!r} is not an ST sample; pass HEST sample folders made by "
        "`napari-seal import`"
    )
    raise BadInputError(msg)


def lookup(
    source: Any,
    run: Any,
    *,
    at_xy: Any,
    references: Sequence[Any],
    k: int = 10,
    space: str = "image",
    n_genes: int = 20,
    store: Any = None,
    batch_size: int = 64,
    device: str | None = None,
    progress: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Return the ``k`` reference spots nearest to a region and their expression.

    Parameters
    ----------
    source
        The slide the region is on: a slide path, HEST sample folder, ``Slide`` or
        ``SpatialSample``.
    run
        A SEAL run folder or loaded run (its encoder embeds region and spots).
    at_xy
        A point ``(x, y)`` or a polygon ``(n, 2)`` in level-0 pixels (or text
        ``"X,Y"`` / ``"X1,Y1;X2,Y2;..."``).
    references
        Reference ST samples (or their folders).
    k
        Number of nearest spots.
    space
        ``"image"`` (default), ``"omics"`` or ``"both"`` (see the module docs).
    n_genes
        Genes listed in each expression summary.
    store
        An embedding store made with the run (polygon regions use its tiles).
    batch_size, device
        Embedding batch size and torch device.
    progress
        Called with each progress event.

    Returns
    -------
    dict
        JSON-able: ``neighbours`` (rank, sample, spot_id, similarity, xy), the region,
        and ``expression`` (``top_genes``, ``enriched_genes``, in log1p CP10k).
    """
    return drain(
        iter_lookup(
            source,
            run,
            at_xy=at_xy,
            references=references,
            k=k,
            space=space,
            n_genes=n_genes,
            store=store,
            batch_size=batch_size,
            device=device,
        ),
        progress,
    )
