"""Batch inference: uint8 RGB tiles -> float32 embeddings.

Precision follows the encoder's model card (``Encoder.dtype``) where the device can run
it: CUDA autocasts to fp16 or bf16; the CPU autocasts only to bf16 (CPU fp16 autocast is
slow and poorly supported, so fp16 models run in fp32 there); other devices run fp32.
:func:`inference_precision` says which one a call will use (``embed`` records it).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError

__all__ = ["autocast_context", "encode_images", "inference_precision"]

_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def _device(device: Any):
    import torch

    return device if isinstance(device, torch.device) else torch.device(device)


def inference_precision(encoder, device: Any = None) -> str:
    """Return ``"fp32"``, ``"fp16"`` or ``"bf16"``, the precision of encode_images."""
    import torch

    dev = _device(device) if device is not None else encoder.device
    dtype = encoder.dtype
    if dtype == torch.float32:
        return "fp32"
    if dev.type == "cuda":
        return _NAMES[str(dtype).removeprefix("torch.")]
    if dev.type == "cpu" and dtype == torch.bfloat16:
        return "bf16"
    return "fp32"


def autocast_context(encoder, device: Any = None):
    """A ``torch.autocast`` context for the encoder's precision (or a null context)."""
    import torch

    dev = _device(device) if device is not None else encoder.device
    precision = inference_precision(encoder, dev)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=dev.type, dtype=dtype)


def encode_images(
    encoder, images_uint8: Any, *, batch_size: int = 64, device: Any = None
) -> np.ndarray:
    """Embed RGB tiles with an encoder, without gradients.

    Parameters
    ----------
    encoder
        An :class:`~napari_seal.models.registry.Encoder`.
    images_uint8
        ``(n, H, W, 3)`` or one ``(H, W, 3)`` uint8 array (or tensor, or a sequence of
        equally sized ``(H, W, 3)`` arrays). Tiles that are not ``tile_px`` square are
        resized by the encoder's transform.
    batch_size
        Tiles per forward pass.
    device
        Run on this device (the module is moved there); default: where it is.

    Returns
    -------
    numpy.ndarray
        ``(n, D)`` float32.
    """
    import torch

    if batch_size < 1:
        msg = f"batch_size must be at least 1, got {batch_size}"
        raise BadInputError(msg)
    if isinstance(images_uint8, (list, tuple)):
        images_uint8 = (
            np.stack([np.asarray(im) for im in images_uint8])
            if images_uint8
            else np.zeros((0, encoder.tile_px, encoder.tile_px, 3), np.uint8)
        )
    if getattr(images_uint8, "ndim", 0) == 3:
        images_uint8 = images_uint8[None]
    n = int(images_uint8.shape[0])
    module = encoder.module
    if device is not None:
        module.to(_device(device))
    dev = encoder.device
    out = np.empty((n, encoder.embed_dim), dtype=np.float32)
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode(), autocast_context(encoder, dev):
            for start in range(0, n, batch_size):
                batch = encoder.transform(images_uint8[start : start + batch_size])
                emb = module(batch.to(dev, non_blocking=True))
                out[start : start + len(batch)] = emb.float().cpu().numpy()
    finally:
        module.train(was_training)
    return out
