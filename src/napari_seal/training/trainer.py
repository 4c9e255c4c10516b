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
import math
import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from napari_seal.errors import CheckpointError, TrainingConfigError
from napari_seal.progress import Progress
from napari_seal.training.events import (
    CheckpointEvent,
    EpochEvent,
    EvalEvent,
    StepEvent,
)

if TYPE_CHECKING:
    from napari_seal.sample import SpatialSample
    from napari_seal.training.config import TrainConfig

__all__ = [
    "CheckpointEvent",
    "EpochEvent",
    "EvalEvent",
    "SealModel",
    "StepEvent",
    "iter_train",
    "lr_at",
    "train",
]

log = logging.getLogger(__name__)


class SealModel(nn.Module):
    """The trainable SEAL pair: LoRA encoder, omics VAE, image->gene decoder."""

    def __init__(
        self, encoder: nn.Module, omics: nn.Module, decoder: nn.Module
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.omics = omics
        self.decoder = decoder
        self.split = None  # a training._prefix.PrefixSplit when views are cached

    def forward(self, images: torch.Tensor, expr: torch.Tensor, feats=None):
        """Return ``(z_img, vae_output, predicted_expression)``.

        With ``feats`` (cached activations at the first adapted block) only the layers
        from that block on run; ``images`` is then a one-image dummy batch.
        """
        if feats is not None:
            z_img = self.split.suffix(feats, images)
        else:
            z_img = self.encoder(images)
        return z_img, self.omics(expr), self.decoder(z_img)

    def set_train_mode(self) -> None:
        """Heads train; the frozen backbone runs in eval mode (fixed BatchNorm
        statistics, no stochastic depth), only its LoRA dropout is active."""
        self.train()
        self.encoder.eval()
        for name, module in self.encoder.named_modules():
            if name.endswith("lora_dropout") or ".lora_dropout." in name:
                module.train()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything a checkpoint needs: LoRA weights, heads' weights and buffers."""
        out = {
            f"encoder.{n}": p
            for n, p in self.encoder.named_parameters()
            if p.requires_grad
        }
        out.update({f"omics.{k}": v for k, v in self.omics.state_dict().items()})
        out.update({f"decoder.{k}": v for k, v in self.decoder.state_dict().items()})
        return out

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`trainable_state` (every key must fit)."""
        from napari_seal.runs import split_prefixed

        enc = split_prefixed(tensors, "encoder")
        expected = {n for n, p in self.encoder.named_parameters() if p.requires_grad}
        if set(enc) != expected:
            msg = (
                "the checkpoint's adapters do not match this model "
                f"(missing {sorted(expected - set(enc))[:5]}, "
                f"unexpected {sorted(set(enc) - expected)[:5]})"
            )
            raise CheckpointError(msg)
        params = dict(self.encoder.named_parameters())
        with torch.no_grad():
            for n, t in enc.items():
                params[n].copy_(t)
        self.omics.load_state_dict(split_prefixed(tensors, "omics"), strict=True)
        self.decoder.load_state_dict(split_prefixed(tensors, "decoder"), strict=True)


def lr_at(step: int, *, base_lr: float, total_steps: int, warmup_steps: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up, then cosine.

    Examples
    --------
    >>> lr_at(0, base_lr=1.0, total_steps=10, warmup_steps=0)
    1.0
    >>> round(lr_at(5, base_lr=1.0, total_steps=10, warmup_steps=0), 3)
    0.5
    """
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX).

    Without it bf16 is emulated: on an AVX2-only CPU a bf16-autocast forward of
    EfficientNet-Lite0 or a ViT-S is 8-9x slower than fp32 (docs/training.md).
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 when asked and the device runs it natively, else ``None`` (fp32)."""
    if precision != "bf16":
        return None
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    log.info("bf16 is not native on %s; training in fp32 (faster there)", device)
    return None


def _resolve_config(
    out: Path, config: TrainConfig | None, *, resume: bool
) -> TrainConfig:
    import json

    from napari_seal import runs
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
    from napari_seal import runs
    from napari_seal.training import _loop

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
