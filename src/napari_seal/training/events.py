"""Typed events yielded by :func:`napari_seal.training.trainer.iter_train`.

Each is a :class:`~napari_seal.progress.Progress` (``stage="train"``, ``done`` =
optimiser steps so far, ``total`` = steps planned), so generic progress bars draw them,
with the training numbers as typed fields. ``to_dict()`` is the line written to
``metrics.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from napari_seal.progress import Progress

__all__ = ["CheckpointEvent", "EpochEvent", "EvalEvent", "StepEvent"]


@dataclass
class StepEvent(Progress):
    """One optimiser step.

    Attributes
    ----------
    step
        Global step number (1-based: steps done).
    epoch
        Epoch index (0-based).
    loss
        Total loss; ``clip``, ``recon_vae``, ``recon_img`` and ``kl`` are its terms
        (unweighted).
    lr
        Learning rate used for the step.
    acc
        In-batch image->expression retrieval accuracy (top-1 over the global batch).
    """

    stage: str = "train"
    unit: str = "steps"
    step: int = 0
    epoch: int = 0
    loss: float = 0.0
    clip: float = 0.0
    recon_vae: float = 0.0
    recon_img: float = 0.0
    kl: float = 0.0
    lr: float = 0.0
    acc: float = 0.0


@dataclass
class EpochEvent(Progress):
    """End of an epoch: means over its steps and the wall time."""

    stage: str = "train"
    unit: str = "steps"
    step: int = 0
    epoch: int = 0
    loss: float = 0.0
    acc: float = 0.0
    seconds: float = 0.0


@dataclass
class EvalEvent(Progress):
    """Metrics on the held-out spots (``TrainConfig.eval_fraction > 0``).

    ``metrics``: ``clip`` (loss), ``acc`` (image->expression top-1 among the held-out
    spots), ``pearson_img`` (mean over genes of the decoder's Pearson r), ``n_spots``.
    """

    stage: str = "train"
    unit: str = "steps"
    step: int = 0
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckpointEvent(Progress):
    """A checkpoint (or the final run) was written to ``path``."""

    stage: str = "train"
    unit: str = "steps"
    step: int = 0
    epoch: int = 0
    path: str = ""
    reason: str = "epoch"
