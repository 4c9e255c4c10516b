"""Run the frozen layers before the first LoRA block once per augmented view.

With ``TrainConfig.augment_views = K > 0`` the trainer augments every training patch
``K`` times (seeded), runs each view through the frozen part of the encoder that comes
before the first adapted block, and keeps those activations in memory. Each epoch then
uses one of the K views of each spot and only the adapted layers run per step. On a
CPU the frozen prefix is most of the cost (about 80% of EfficientNet-Lite0's forward),
so this trades augmentation diversity (K views instead of a fresh one per epoch) for a
several-fold faster step. ``K = 0`` keeps the full forward with fresh augmentation.

How the split works, for any encoder: the first adapted block ``M`` is found by
running the model once and noting which block holding a LoRA layer executes first. Its
input is captured with a forward pre-hook that stops the forward there; the suffix is
run by calling the whole model on a one-image dummy batch while a pre-hook on ``M``
swaps in the cached activations (so the code after ``M`` is the model's own). This
needs ``M``'s input to be the only path from the prefix to the rest, which holds for
sequential-block encoders (ViTs, EfficientNets); :class:`PrefixSplit` checks the split
against the full forward on real patches and is not used when they differ.
"""

from __future__ import annotations

import logging
import re

import torch
from torch import nn

from napari_seal.progress import Progress

__all__ = ["PrefixSplit", "find_split", "precompute_views"]

log = logging.getLogger(__name__)


class _Captured(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value


class PrefixSplit:
    """Split of an encoder at the input of its first adapted block.

    Parameters
    ----------
    model
        The (peft-wrapped) encoder module, called as ``model(images)``.
    boundary
        The first adapted block (its input is what gets cached).
    """

    def __init__(self, model: nn.Module, boundary: nn.Module, name: str) -> None:
        self.model = model
        self.boundary = boundary
        self.name = name

    def prefix(self, images: torch.Tensor) -> torch.Tensor:
        """Activations entering the boundary block for ``images`` (no grad)."""

        def hook(module, args):
            raise _Captured(args[0])

        handle = self.boundary.register_forward_pre_hook(hook)
        try:
            with torch.no_grad():
                self.model(images)
        except _Captured as cap:
            return cap.value.detach()
        finally:
            handle.remove()
        msg = f"the forward never reached {self.name}"
        raise RuntimeError(msg)

    def suffix(self, feats: torch.Tensor, dummy: torch.Tensor) -> torch.Tensor:
        """The model's output when ``feats`` enter the boundary block."""

        def hook(module, args):
            return (feats, *args[1:])

        handle = self.boundary.register_forward_pre_hook(hook)
        try:
            return self.model(dummy)
        finally:
            handle.remove()


def _execution_order(model: nn.Module, dummy: torch.Tensor) -> list[str]:
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        handles.append(
            module.register_forward_pre_hook(lambda m, a, name=name: order.append(name))
        )
    try:
        with torch.no_grad():
            model(dummy)
    finally:
        for h in handles:
            h.remove()
    return order


def find_split(
    model: nn.Module, *, block_regex: str, check: torch.Tensor, tol: float = 1e-4
) -> PrefixSplit | None:
    """Find and verify the prefix split of a peft-wrapped encoder.

    Parameters
    ----------
    model
        The LoRA-wrapped encoder (eval mode while checking).
    block_regex
        The LoRA spec's block regex (``^blocks\\.(\\d+)\\.``); the block of an adapted
        layer is the module named by the regex match; a layer outside any block is its
        own boundary.
    check
        A few real, normalised patches used to verify the split.

    Returns
    -------
    The split, or ``None`` when it cannot be found or changes the output.
    """
    lora_layers = [
        n
        for n, m in model.named_modules()
        if hasattr(m, "lora_A") and isinstance(m.lora_A, nn.ModuleDict)
    ]
    if not lora_layers:
        return None
    rx = re.compile(block_regex.lstrip("^"))
    modules = dict(model.named_modules())
    candidates = set()
    for name in lora_layers:
        m = rx.search(name)
        candidates.add(name[: m.end() - 1] if m else name)
    order = _execution_order(model, check[:1])
    first = next((n for n in order if n in candidates), None)
    if first is None or first not in modules:
        return None
    split = PrefixSplit(model, modules[first], first)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            full = model(check)
            feats = split.prefix(check)
            part = split.suffix(feats, check[:1])
        ok = part.shape == full.shape and torch.allclose(
            part, full, rtol=1e-3, atol=tol * float(full.abs().max()) + 1e-6
        )
    except (RuntimeError, ValueError, IndexError) as err:
        log.warning("cannot split the encoder at %s (%s); full forward", first, err)
        ok = False
    finally:
        model.train(was_training)
    if not ok:
        log.warning("the prefix split at %s changes the output; full forward", first)
        return None
    return split


def precompute_views(
    split: PrefixSplit,
    images,
    *,
    n_views: int,
    mode: str,
    seed: int,
    norm: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    batch_size: int = 64,
    max_bytes: float = 2 * 2**30,
    autocast: torch.dtype | None = None,
):
    """Yield ``(k, None)`` per finished view, then ``(n_views, tensor)``.

    The tensor is ``(n_views, N, ...)`` float32 on the CPU: the boundary-block input of
    every augmented view of every patch. View ``k`` uses a generator seeded by
    ``(seed, k)``, so it is the same after a resume. ``(0, None)`` only, when the
    cache would exceed ``max_bytes``. ``autocast`` (the training steps' dtype, or
    ``None`` for fp32) runs the prefix as the steps run the rest of the encoder.
    """
    from napari_seal.training.augment import augment_batch

    n = len(images)
    probe = split.prefix(_normalised(images[:1], norm, device))
    per = probe[0].numel() * 4
    if per * n * n_views > max_bytes:
        log.warning(
            "the augmented-view cache would need %.1f GiB; using the full forward",
            per * n * n_views / 2**30,
        )
        yield 0, None
        return
    cache = torch.empty((n_views, n, *probe.shape[1:]), dtype=torch.float32)
    for k in range(n_views):
        gen = torch.Generator().manual_seed(int(seed) * 1009 + 17 * k + 3)
        for i in range(0, n, batch_size):
            batch = torch.from_numpy(images[i : i + batch_size]).permute(0, 3, 1, 2)
            x = augment_batch(batch, mode=mode, generator=gen)
            x = ((x.to(device) - norm[0]) / norm[1]).contiguous(
                memory_format=torch.channels_last
            )
            with torch.autocast(
                device.type, dtype=autocast, enabled=autocast is not None
            ):
                feats = split.prefix(x)
            cache[k, i : i + batch_size] = feats.float().cpu()
        yield k + 1, None
    yield n_views, cache


def _normalised(images, norm, device) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = (x.to(device) - norm[0]) / norm[1]
    return x.contiguous(memory_format=torch.channels_last)


def cached_views(core, pairs, lora_spec, config, encoder, device):
    """Split the encoder at its first adapted block and cache K augmented views.

    Returns the ``(K, N, ...)`` activations, or ``None`` (full forward) when the
    encoder cannot be split or the cache would be too large.
    """
    norm = (
        torch.tensor(encoder.mean, device=device).view(1, 3, 1, 1),
        torch.tensor(encoder.std, device=device).view(1, 3, 1, 1),
    )
    check = torch.from_numpy(pairs.images[:4]).permute(0, 3, 1, 2).float() / 255.0
    check = ((check.to(device) - norm[0]) / norm[1]).contiguous(
        memory_format=torch.channels_last
    )
    split = find_split(core.encoder, block_regex=lora_spec.block_regex, check=check)
    if split is None:
        return None
    from napari_seal.training.model import autocast_dtype

    n_views = config.augment_views
    for k, cache in precompute_views(
        split,
        pairs.images,
        n_views=n_views,
        mode=config.augment,
        seed=config.seed,
        norm=norm,
        device=device,
        autocast=autocast_dtype(config.precision, device),
    ):
        if cache is not None:
            core.split = split
            return cache
        if k == 0:
            return None
        yield Progress(
            stage="prepare",
            done=k,
            total=n_views,
            unit="views",
            message=f"augmented view {k}/{n_views} through the frozen layers",
        )
    return None
