"""Fold the frozen backbone's BatchNorm layers into their convolutions (training only).

The backbone is frozen and runs in eval mode during SEAL training, so each BatchNorm is
a fixed per-channel affine map that can be merged into the convolution before it. For
EfficientNet-Lite0 at batch 64 on a CPU that removes about a third of the forward time
(the BatchNorm passes are memory-bound). Only the trainer's private copy of the encoder
is changed: the frozen weights are never saved, the adapters keep their names, and
``load_run`` rebuilds the untouched architecture. Convolutions that carry LoRA adapters
are left alone (they are peft wrappers, not ``nn.Conv2d``). The folded model is checked
against the original on an example batch and the fold is undone if they differ.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

__all__ = ["fold_frozen_batchnorm"]

log = logging.getLogger(__name__)


def _pairs(module: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, bn): each frozen BatchNorm2d right after a frozen sibling Conv2d."""
    out = []
    for parent in module.modules():
        last_conv: nn.Conv2d | None = None
        for child in parent.children():
            if isinstance(child, nn.Conv2d) and child.groups >= 1:
                last_conv = child
            elif isinstance(child, nn.BatchNorm2d):
                ok = (
                    last_conv is not None
                    and child.track_running_stats
                    and last_conv.out_channels == child.num_features
                    and not any(p.requires_grad for p in last_conv.parameters())
                    and not any(p.requires_grad for p in child.parameters())
                )
                if ok:
                    out.append((last_conv, child))
                last_conv = None
            elif len(list(child.parameters())):
                last_conv = None  # something with weights sits in between
    return out


def _act_only(bn: nn.Module):
    drop = getattr(bn, "drop", None)
    act = getattr(bn, "act", None)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if drop is not None:
            x = drop(x)
        return act(x) if act is not None else x

    return forward


def fold_frozen_batchnorm(module: nn.Module, example: torch.Tensor) -> int:
    """Fold frozen ``Conv2d -> BatchNorm2d`` pairs of ``module`` in place.

    Parameters
    ----------
    module
        The (frozen, eval-mode) encoder module.
    example
        A small input batch used to check that the output is unchanged.

    Returns
    -------
    The number of BatchNorm layers folded (0 when none, or when the check failed and
    the fold was undone).
    """
    pairs = _pairs(module)
    if not pairs:
        return 0
    was_training = module.training
    module.eval()
    with torch.no_grad():
        ref = module(example)
        saved = []
        for conv, bn in pairs:
            saved.append(
                (
                    conv,
                    conv.weight.detach().clone(),
                    None if conv.bias is None else conv.bias.detach().clone(),
                    bn,
                    "forward" in bn.__dict__,
                )
            )
            scale = (
                bn.weight / torch.sqrt(bn.running_var + bn.eps)
                if bn.affine
                else (1.0 / torch.sqrt(bn.running_var + bn.eps))
            )
            shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
            bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
            conv.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
            bn.forward = _act_only(bn)
        out = module(example)
        tol = 1e-4 * float(ref.abs().max()) + 1e-5
        if not torch.allclose(out, ref, rtol=1e-3, atol=tol):
            for conv, weight, bias, bn, had_forward in saved:
                conv.weight.copy_(weight)
                conv.bias = (
                    None if bias is None else nn.Parameter(bias, requires_grad=False)
                )
                if not had_forward:
                    del bn.forward
            log.warning("BatchNorm folding changed the encoder output; left unfolded")
            module.train(was_training)
            return 0
    module.train(was_training)
    return len(pairs)
