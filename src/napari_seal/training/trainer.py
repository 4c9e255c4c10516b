"""The SEAL trainer: a generator of typed events (cancel = stop iterating).

``iter_train`` prepares everything first (panel, patches, model; bad input fails before
anything is written), then trains: frozen backbone + LoRA, omics VAE and image decoder,
loss ``CLIP + recon(VAE) + recon(image decoder)`` (``losses.py``), AdamW with a linear
warm-up and cosine decay, bf16 autocast where the device supports it. It yields a
:class:`StepEvent` per step and writes a checkpoint at every epoch end. Closing the
generator (``gen.close()``, napari's worker quit, a stopped ``for`` loop that drops it)
writes a checkpoint of the last finished step and re-raises ``GeneratorExit``;
``resume=True`` restores weights, optimiser, step, data position and RNG states, so the
run continues as if it had not stopped. A ``STOP`` file in the run directory stops the
run the same way at the next step (useful for torchrun jobs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from napari_seal.errors import CheckpointError, TrainingConfigError
from napari_seal.progress import Progress

if TYPE_CHECKING:
    from napari_seal.io.sample import SpatialSample
    from napari_seal.training.config import TrainConfig

__all__ = [
    "iter_train",
    "train",
]

log = logging.getLogger(__name__)


def _resolve_config(
    out: Path, config: TrainConfig | None, *, resume: bool
) -> TrainConfig:
    import json

    import napari_seal.training.runs as runs
    from napari_seal.training.config import TrainConfig, config_from_preset

    saved = None
    if resume and runs.is_run_dir(out):
        saved = TrainConfig.from_dict(json.loads((out / runs.CONFIG).read_text()))
    if resume and saved is None and runs.latest_checkpoint(out) is not None:
        msg = (
            f"{out} has checkpoints but no config.json; it is damaged, start a new run"
        )
        raise CheckpointError(msg)
    if saved is not None and config is not None:
        a, b = saved.to_dict(), config.to_dict()
        changed = sorted(
            k for k in a if a[k] != b[k] and k not in ("epochs", "max_steps", "preset")
        )
        if changed:
            msg = (
                f"--resume with settings that differ from the run's config.json: "
                f"{', '.join(f'{k}={b[k]!r} (run: {a[k]!r})' for k in changed)}; only "
                "--epochs and --max-steps may change when resuming"
            )
            raise TrainingConfigError(msg)
        return saved.replace(epochs=config.epochs, max_steps=config.max_steps)
    if saved is not None:
        return saved
    return config if config is not None else config_from_preset("cpu")


def iter_train(
    samples: Sequence[SpatialSample],
    *,
    out: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
) -> Generator[Progress, None, Path]:
    """Fine-tune an encoder with SEAL on ``samples``; yield events; return the run path.

    Parameters
    ----------
    samples
        Training samples (slide + spots + raw counts).
    out
        Run directory (created; must be new or empty unless ``resume``).
    config
        The configuration (default: the ``cpu`` preset). With ``resume`` the run's
        saved config is used; only ``epochs`` and ``max_steps`` may differ.
    resume
        Continue the run in ``out`` from its latest checkpoint (a fresh start when it
        has none yet).
    device
        ``"cpu"``, ``"cuda"``, ... (default: CUDA when available, else CPU).

    Yields
    ------
    Progress
        ``Progress(stage="prepare")`` while preparing, then :class:`StepEvent`,
        :class:`EvalEvent`, :class:`EpochEvent` and :class:`CheckpointEvent`.

    Returns
    -------
    Path
        The run directory (complete, with ``DONE``, unless stopped by a ``STOP`` file).

    Raises
    ------
    TrainingConfigError
        Too few spots for the batch size, inconsistent settings.
    OutputPathError
        The run directory cannot be written or already holds another run.
    """
    import napari_seal.training.runs as runs
    from napari_seal.training import _loop

    runs.remove_stale_leftovers(out)
    out = runs.check_output_dir(out, resume=resume)
    config = _resolve_config(out, config, resume=resume)
    dev = torch.device(
        device
        if device not in (None, "auto")
        else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    return (
        yield from _loop.run(samples, out=out, config=config, resume=resume, device=dev)
    )


def train(
    samples: Sequence[SpatialSample],
    *,
    out: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: Any = None,
) -> Path:
    """Run :func:`iter_train` to completion; ``progress(event)`` sees every event.

    Examples
    --------
    >>> from napari_seal.training.config import config_from_preset  # doctest: +SKIP
    >>> cfg = config_from_preset("cpu-smoke")  # doctest: +SKIP
    >>> train([sample], out="run", config=cfg)  # doctest: +SKIP
    """
    from napari_seal.progress import drain

    return drain(
        iter_train(samples, out=out, config=config, resume=resume, device=device),
        progress,
    )


def elapsed(t0: float) -> float:
    """Seconds since ``t0`` (``time.perf_counter``)."""
    return time.perf_counter() - t0
