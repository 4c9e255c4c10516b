"""A gene-query score in the shape of an expression head (for live overlays).

:class:`ScoreHead` lets :class:`~napari_seal.predict.live.LiveOverlay` paint a
query's score (``omics`` or ``decoder`` route) tile by tile, as it paints predicted
expression: ``hidden`` is the score itself, one column.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ScoreHead"]


class ScoreHead:
    """The ``route`` score of one gene (or query text) of a loaded SEAL ``run``."""

    def __init__(self, run: Any, gene: str, route: str) -> None:
        from napari_seal.retrieval.scoring import parse_run_query, require_route

        require_route(run, route)
        self.run, self.route = run, route
        self.query = parse_run_query(run, [gene])
        self.genes = [f"{gene} ({route} score)"]

    def index(self, genes: Any) -> list[int]:
        """The one output column (any name maps to it: the query is fixed)."""
        return [0]

    def hidden(self, emb: Any) -> Any:
        """Scores of embeddings ``emb`` ``(n, D)`` -> ``(n, 1)``."""
        from napari_seal.retrieval.scoring import score_embeddings

        return score_embeddings(self.run, emb, self.query, route=self.route)[:, None]

    def output(self, hidden: Any, index: Any) -> Any:
        """The score column."""
        return hidden[:, list(index)]
