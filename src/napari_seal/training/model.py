"""The SEAL model being trained and its optimisation helpers.

:class:`SealModel` pairs the LoRA encoder with the omics VAE and the image->gene
decoder; :func:`lr_at` is the warm-up + cosine schedule; :func:`autocast_dtype`
chooses bf16 autocast only where the device executes it natively.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from napari_seal.errors import CheckpointError

__all__ = ["SealModel", "autocast_dtype", "cpu_has_native_bf16", "lr_at"]

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
        from napari_seal.training.runs import split_prefixed

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
