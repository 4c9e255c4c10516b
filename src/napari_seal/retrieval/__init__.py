"""Gene queries (gene -> tissue) and lookup (tissue -> expression of reference spots).

Owns gene signatures and their parsing, scoring routes (``omics``, ``decoder``), score
images, highlight contours and galleries, the query result files, and the lookup.
May import: :mod:`napari_seal.predict`, :mod:`napari_seal.embedding`,
:mod:`napari_seal.training.runs`, :mod:`napari_seal.models`, :mod:`napari_seal.io`.
"""

from __future__ import annotations

from napari_seal.retrieval.gene_query import (
    iter_query,
    query,
    score_image,
    spot_scores,
)
from napari_seal.retrieval.gene_signatures import (
    ALIASES,
    GeneQuery,
    parse_query,
    read_signature,
)
from napari_seal.retrieval.highlight import (
    Contours,
    ScoreImage,
    TopTiles,
    gallery_crops,
    top_fraction_contour,
    top_k_tiles,
)
from napari_seal.retrieval.results import (
    QueryResult,
    read_scores,
    write_scores,
    write_spot_scores,
)
from napari_seal.retrieval.scoring import (
    LEVEL_SD,
    ROUTES,
    check_store_run,
    load_run,
    parse_run_query,
    query_embedding,
    query_expression,
    score_embeddings,
    score_store,
)
from napari_seal.retrieval.spot_lookup import iter_lookup, lookup

__all__ = [
    "ALIASES",
    "Contours",
    "GeneQuery",
    "LEVEL_SD",
    "QueryResult",
    "ROUTES",
    "ScoreImage",
    "TopTiles",
    "check_store_run",
    "gallery_crops",
    "iter_lookup",
    "iter_query",
    "load_run",
    "lookup",
    "parse_query",
    "parse_run_query",
    "query",
    "query_embedding",
    "query_expression",
    "read_scores",
    "read_signature",
    "score_embeddings",
    "score_image",
    "score_store",
    "spot_scores",
    "top_fraction_contour",
    "top_k_tiles",
    "write_scores",
    "write_spot_scores",
]
