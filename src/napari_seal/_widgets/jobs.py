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

__all__ = ["iter_embed_paths", "iter_finetune", "warm_imports"]

# The third-party packages each job imports lazily, by job kind. Loading a compiled
# extension (``dlopen``) holds the interpreter lock for its whole duration (up to 2 s
# each on a loaded 2-core machine), so a worker thread importing them freezes the GUI
# thread; the widgets import them when they are built instead. A test runs each job
# after ``warm_imports`` and fails if the job still imports a new compiled module.
_HEAVY = {
    "embed": (
        "torch",
        "torchvision",
        "timm",
        "safetensors.torch",
        "zarr",
        "tifffile",
        "imagecodecs",
        # tifffile loads the codec of a slide's tiles at the first read
        "imagecodecs._shared",
        "imagecodecs._jpeg8",
        "imagecodecs._imcd",
        "imagecodecs._zlib",
        "imagecodecs._deflate",
        "imagecodecs._jpeg2k",
        "napari_seal.embedding.run",
        "napari_seal.models.encoders",
        "napari_seal.models.inference",
        "napari_seal.training.runs",
    ),
    "train": (
        "peft",
        "scanpy",
        "numba.np.ufunc.omppool",
        "sklearn.linear_model",
        "scipy.optimize",
        "scipy.interpolate",
        "scipy.integrate",
        "matplotlib.pyplot",
        "napari_seal.training.trainer",
        "napari_seal.models.lora",
        "napari_seal.evaluate.benchmark",
    ),
    "query": ("napari_seal.retrieval.gene_query", "napari_seal.predict.expression"),
    "open": (
        "anndata",
        "h5py",
        "tifffile",
        "imagecodecs",
        "imagecodecs._jpeg8",
        "napari_seal.io.open",
        "napari_seal.tiling.qc",
    ),
}
_KIND_DEPS = {
    "open": ("open",),
    "embed": ("embed",),
    "train": ("embed", "train"),
    "query": ("embed", "query"),
}


def warm_imports(kind: str) -> list[str]:
    """Import now what a ``kind`` job ("embed", "train", "query") would import later.

    Returns the module names imported by this call (empty when all were loaded).
    Modules that are not installed are skipped: the job itself reports that.
    """
    import importlib
    import sys

    if kind not in _KIND_DEPS:
        msg = f"unknown job kind {kind!r}; use one of {', '.join(_KIND_DEPS)}"
        raise BadInputError(msg)
    done = []
    for group in _KIND_DEPS[kind]:
        for name in _HEAVY[group]:
            if name in sys.modules:
                continue
            try:
                importlib.import_module(name)
            except ImportError:
                continue
            done.append(name)
    return done


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
    from napari_seal.io.sample import SpatialSample
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
    store: str | Path | None = None,
    encoder: str | None = None,
    weights: str | None = None,
    run: str | Path | None = None,
    batch_size: int = 64,
    device: str | None = None,
) -> Generator[Any, None, Path]:
    """Build the encoder (or load the run), then run
    :func:`napari_seal.embedding.run.iter_embed`.

    ``store=None`` embeds into the workspace store of the slide and model
    (:func:`napari_seal.embedding.inputs.default_store_path`).
    """
    yield Progress("embed", 0, None, "tiles", "loading the encoder")
    from napari_seal.embedding.run import iter_embed

    if run:
        from napari_seal.training.runs import load_run

        model: Any = load_run(Path(run), device=device)
    else:
        from napari_seal.models.factory import create_encoder

        model = create_encoder(encoder or "default", weights=weights, device=device)
    if store is None:  # the workspace store of this slide and model (DESIGN 5)
        from napari_seal.embedding.inputs import (
            default_store_path,
            resolve_encoder,
            resolve_slide,
        )

        slide = resolve_slide(Path(source))
        model = resolve_encoder(model)
        store = default_store_path(slide, model)
        yield Progress("embed", 0, None, "tiles", f"embedding store {store}")
        return (yield from iter_embed(slide, model, store, batch_size=batch_size,
                                      device=device))
    return (yield from iter_embed(Path(source), model, Path(store),
                                  batch_size=batch_size, device=device))

