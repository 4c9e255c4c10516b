"""Jobs of the live overlay: its early start, its model choice and its ``make``.

Split from :mod:`napari_seal._widgets.view_jobs` (the Load, Expression and Gene query
jobs): these prepare a :class:`~napari_seal._widgets._live.LiveOverlayView` for the
Explore dock and ``napari-seal view``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_seal.errors import SealError

__all__ = ["EncoderWithHead", "live_maker", "prepare_live", "start_early"]


def start_early(fn: Any, *args: Any, times: dict[str, float] | None = None) -> Any:
    """Run ``fn(*args)`` now in a thread of its own; its future (``result()`` waits).

    ``times`` receives its ``start`` and ``end`` (``perf_counter``).
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    times = {} if times is None else times

    def timed() -> Any:
        times["start"] = time.perf_counter()
        try:
            return fn(*args)
        finally:
            times["end"] = time.perf_counter()

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-seal-prepare")
    future = pool.submit(timed)
    pool.shutdown(wait=False)
    return future


@dataclass(frozen=True)
class EncoderWithHead:
    """A model that is not a SEAL run: a registry encoder (``weights``: its local
    file) with an expression head saved by ``napari-seal bench --save-head``."""

    encoder: str
    head: str
    weights: str | None = None

    @property
    def label(self) -> str:
        """How the panel lists it."""
        return f"{self.encoder} + head {Path(self.head).name}"


def prepare_live(source: str, model: str | EncoderWithHead) -> tuple[Any, Any]:
    """The slow start of a live overlay: ``(run, engine)``, the run loaded (None for
    an :class:`EncoderWithHead`: its encoder is built) and the slide's
    :class:`~napari_seal.embedding.on_demand.OnDemandEmbedder` (tissue found)."""
    from napari_seal.embedding.on_demand import OnDemandEmbedder

    if isinstance(model, EncoderWithHead):
        from napari_seal.models.factory import create_encoder

        encoder = create_encoder(model.encoder, weights=model.weights)
        return None, OnDemandEmbedder(Path(source), encoder, None)
    from napari_seal.training.runs import load_run

    run = load_run(model)
    return run, OnDemandEmbedder(Path(source), run, None)


def live_maker(source: str, model: str | EncoderWithHead, gene: str, route: str | None,
               *, prepared: Any = None):
    """``make`` for a :class:`~napari_seal._widgets._live.LiveOverlayView` (run in its
    worker): the run's encoder on ``source`` into the workspace store, painting
    ``gene``'s prediction (``route`` None) or its gene-query score, with the reliability
    map of ``gene`` when the run has a reference bank. ``prepared``: a future of
    :func:`prepare_live` for the same slide and model, started earlier (if it failed,
    the work is done again here, where the error is reported)."""

    def make() -> tuple[Any, Any]:
        from napari_seal.predict.expression import expression_head
        from napari_seal.predict.live import LiveOverlay
        from napari_seal.retrieval.score_head import ScoreHead

        pre = None
        if prepared is not None:
            try:
                pre = prepared.result()
            except (SealError, OSError):
                pre = None
        run, engine = pre or prepare_live(source, model)
        head = (expression_head(model.head) if run is None  # encoder with saved head
                else expression_head(run) if route is None
                else ScoreHead(run, gene, route))
        return engine, LiveOverlay(engine.grid, head,
                                   gene if route is None else head.genes[0],
                                   reference=run, reliability_gene=gene)

    return make
