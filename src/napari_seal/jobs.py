"""Path-in generators for the widgets' background jobs.

A widget hands paths and plain values to these generators and starts them in a
worker thread: every slow step (imports of torch, reading samples, building models)
then happens off the GUI thread, and the event loop stays responsive from the click
on. Each is a thin wrapper over one public core generator.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from napari_seal.errors import BadInputError
from napari_seal.progress import Progress

__all__ = ["iter_embed_paths", "iter_finetune"]


def iter_finetune(
    sample_paths: Sequence[str | Path],
    *,
    out: str | Path,
    preset: str,
    encoder: str | None = None,
    weights: str | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    resume: bool = False,
    device: str | None = None,
) -> Generator[Any, None, Path]:
    """Load the samples, then run :func:`napari_seal.training.trainer.iter_train`."""
    if not sample_paths:
        msg = "add at least one training sample (a HEST sample folder)"
        raise BadInputError(msg)
    yield Progress("train", 0, None, "steps", "loading samples")
    from napari_seal.io.open import open_path
    from napari_seal.sample import SpatialSample
    from napari_seal.training.config import config_from_preset
    from napari_seal.training.trainer import iter_train

    samples = []
    for path in sample_paths:
        sample = open_path(Path(path))
        if not isinstance(sample, SpatialSample):
            msg = f"{path} is a slide without spots; training needs ST samples"
            raise BadInputError(msg)
        samples.append(sample)
    config = config_from_preset(preset, encoder=encoder, weights=weights,
                                epochs=epochs, max_steps=max_steps)
    yield Progress("train", 0, None, "steps", "preparing patches")
    return (yield from iter_train(samples, out=Path(out), config=config, resume=resume,
                                  device=device))


def iter_embed_paths(
    source: str | Path,
    *,
    store: str | Path,
    encoder: str | None = None,
    weights: str | None = None,
    run: str | Path | None = None,
    batch_size: int = 64,
    device: str | None = None,
) -> Generator[Any, None, Path]:
    """Build the encoder (or load the run), then run :func:`napari_seal.embed.iter_embed`."""
    yield Progress("embed", 0, None, "tiles", "loading the encoder")
    from napari_seal.embed import iter_embed

    if run:
        from napari_seal.runs import load_run

        model: Any = load_run(Path(run), device=device)
    else:
        from napari_seal.models.registry import create_encoder

        model = create_encoder(encoder or "default", weights=weights, device=device)
    return (yield from iter_embed(Path(source), model, Path(store),
                                  batch_size=batch_size, device=device))

