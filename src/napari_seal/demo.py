"""The main job, headless: the SEAL loop on the bundled her2st section.

import -> the shipped SEAL model first (its held-out numbers, predicted ERBB2 with no
training) -> short SEAL fine-tune on the CPU -> embed the slide -> predicted-expression
overlay -> gene query. :func:`iter_demo` yields progress events and returns a
:class:`DemoResult` with every artefact's path; ``napari-seal demo`` then renders the
viewer screenshots and writes the Markdown report (``_widgets/_report.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import napari_seal.training.runs as runs
from napari_seal.progress import Progress, drain

__all__ = ["DemoResult", "demo", "iter_demo"]

DEMO_GENES = ("ERBB2", "KRT19", "CD74", "COL1A1")


@dataclass
class DemoResult:
    """Everything the demo produced (paths are inside ``out``)."""

    out: Path
    sample_dir: Path
    run_dir: Path
    store: Path
    query_store: Path | None
    gene: str
    genes: list[str]
    spot_pearson: dict[str, float] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    losses: list[dict[str, Any]] = field(default_factory=list)
    shipped_run: Path | None = None
    shipped_store: Path | None = None
    shipped_pearson: dict[str, float] = field(default_factory=dict)
    shipped_info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {k: (str(v) if isinstance(v, Path) else v)
                for k, v in self.__dict__.items()}


def iter_demo(
    out: str | Path,
    *,
    epochs: int = 2,
    max_steps: int | None = None,
    max_tiles: int | None = None,
    device: str | None = None,
) -> Generator[Any, None, DemoResult]:
    """Run the demo loop, yielding progress events.

    Parameters
    ----------
    out
        Output folder (created; re-running resumes the embedding and reuses a
        finished run).
    epochs
        Fine-tuning epochs on the bundled section (CPU preset otherwise).
    max_steps
        Stop fine-tuning after this many steps (tests).
    max_tiles
        Embed at most this many tissue tiles (tests).
    device
        Torch device (default: auto).
    """
    from napari_seal.io.atomic import atomic_write_text, ensure_writable_dir
    from napari_seal.io.convert import import_sample
    from napari_seal.io.hest import bundled_sample_path, load_sample

    out = ensure_writable_dir(Path(out))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sample_dir = out / "sample"
    if not sample_dir.exists():
        yield Progress("import", 0, 1, "samples",
                       "importing the bundled her2st section")
        import_sample("hest", [bundled_sample_path()], out=sample_dir)
    sample = load_sample(sample_dir)
    timings["import"] = time.perf_counter() - t0

    shipped = yield from _shipped(sample, out, max_tiles=max_tiles, device=device)
    timings["shipped_model"] = time.perf_counter() - t0 - sum(timings.values())

    run_dir, losses = yield from _fine_tune(sample_dir, out / "run", epochs=epochs,
                                            max_steps=max_steps, device=device)
    timings["fine_tune"] = time.perf_counter() - t0 - sum(timings.values())

    from napari_seal.embedding.run import iter_embed
    from napari_seal.training.runs import load_run

    run = load_run(run_dir, device=device)
    store = out / "embeddings.zarr"
    yield from iter_embed(sample, run, store, device=device, max_tiles=max_tiles)
    timings["embed"] = time.perf_counter() - t0 - sum(timings.values())

    from napari_seal.predict.expression import expression_head, open_store
    from napari_seal.predict.spots import compare_at_spots, spot_predictions

    head = expression_head(run)
    genes = [g for g in DEMO_GENES if g in head.genes] or list(head.genes[:1])
    opened = open_store(store)
    predicted = spot_predictions(sample, run, head, genes=genes, device=device)
    pearson = {g: float(compare_at_spots(sample, predicted, g)) for g in genes}
    timings["predict"] = time.perf_counter() - t0 - sum(timings.values())
    del opened

    query_store = out / "query_ERBB2.zarr"
    gene = genes[0]
    yield Progress("query", 0, 1, "queries", f"gene query {gene}")
    from napari_seal.retrieval.gene_query import iter_query

    yield from iter_query(sample, run, gene, store=store, out=query_store,
                          device=device)
    timings["query"] = time.perf_counter() - t0 - sum(timings.values())

    result = DemoResult(out=out, sample_dir=sample_dir, run_dir=run_dir, store=store,
                        query_store=query_store, gene=gene, genes=genes,
                        spot_pearson=pearson, timings_s=timings, losses=losses,
                        **shipped)
    atomic_write_text(out / "demo.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def _shipped(sample: Any, out: Path, *, max_tiles: int | None, device: str | None):
    """The shipped model, no training: embed, predict the demo genes at the spots."""
    from napari_seal.embedding.run import iter_embed
    from napari_seal.models.shipped import shipped_model_info, shipped_run_path
    from napari_seal.predict.expression import expression_head
    from napari_seal.predict.spots import compare_at_spots, spot_predictions

    yield Progress("shipped", 0, 1, "models", "the shipped SEAL model (no training)")
    info = shipped_model_info()
    run = runs.load_run(shipped_run_path(), device=device)
    store = out / "shipped_embeddings.zarr"
    yield from iter_embed(sample, run, store, device=device, max_tiles=max_tiles)
    head = expression_head(run)
    genes = [g for g in DEMO_GENES if g in head.genes]
    predicted = spot_predictions(sample, run, head, genes=genes, device=device)
    pearson = {g: float(compare_at_spots(sample, predicted, g)) for g in genes}
    return {"shipped_run": run.path, "shipped_store": store,
            "shipped_pearson": pearson, "shipped_info": info}


def _fine_tune(sample_dir: Path, run_dir: Path, *, epochs: int, max_steps: int | None,
               device: str | None):
    from napari_seal.io.hest import load_sample
    from napari_seal.training.config import config_from_preset
    from napari_seal.training.trainer import iter_train

    losses: list[dict[str, Any]] = []
    if (run_dir / runs.DONE).exists():
        return run_dir, _read_losses(run_dir)
    config = config_from_preset("cpu", epochs=epochs, max_steps=max_steps,
                                batch_size=32)
    gen = iter_train([load_sample(sample_dir)], out=run_dir, config=config,
                     resume=run_dir.exists(), device=device)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return (stop.value or run_dir), losses or _read_losses(run_dir)
        yield event


def _read_losses(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / runs.METRICS
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("type") == "StepEvent" or r.get("event") == "step"]


def demo(out: str | Path, *, progress=None, **kwargs: Any) -> DemoResult:
    """Run :func:`iter_demo` to completion (``progress`` receives each event)."""
    return drain(iter_demo(out, **kwargs), progress)
