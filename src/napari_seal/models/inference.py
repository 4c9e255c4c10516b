"""Batch inference: uint8 RGB tiles -> float32 embeddings.

Precision and memory format are chosen per encoder and per machine
(:func:`napari_seal.models.precision.plan_inference`): by default (``"auto"``) bf16
autocast where the device runs bf16 natively (on CPU: AVX512-BF16/AMX), fp32
elsewhere; channels_last for convolutional encoders. :class:`InferenceSession`
prepares the module once (memory format, optional ``torch.compile``, a warm-up pass)
and is what ``embed`` runs; :func:`encode_images` is the one-call form.
:func:`inference_precision` says which precision a call will use.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError
from napari_seal.models.precision import (
    InferencePlan,
    plan_inference,
    resolve_precision,
    tune_cpu_allocator,
)

__all__ = [
    "InferenceSession",
    "autocast_context",
    "encode_images",
    "inference_precision",
]


def _device(device: Any):
    import torch

    return device if isinstance(device, torch.device) else torch.device(device)


def inference_precision(encoder, device: Any = None, *, precision: str = "auto") -> str:
    """Return ``"fp32"``, ``"fp16"`` or ``"bf16"``, the precision of encode_images."""
    return resolve_precision(encoder, device, precision)[0]


def _autocast(precision: str, dev: Any):
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=dev.type, dtype=dtype)


def autocast_context(encoder, device: Any = None, *, precision: str = "auto"):
    """A ``torch.autocast`` context for the encoder's precision (or a null context)."""
    dev = _device(device) if device is not None else encoder.device
    return _autocast(inference_precision(encoder, dev, precision=precision), dev)


def _as_batch(encoder, images_uint8: Any) -> Any:
    if isinstance(images_uint8, (list, tuple)):
        images_uint8 = (
            np.stack([np.asarray(im) for im in images_uint8])
            if images_uint8
            else np.zeros((0, encoder.tile_px, encoder.tile_px, 3), np.uint8)
        )
    if getattr(images_uint8, "ndim", 0) == 3:
        images_uint8 = images_uint8[None]
    return images_uint8


class InferenceSession:
    """An encoder prepared to embed many batches with one :class:`InferencePlan`.

    Preparing moves the module to the device, converts its weights to the plan's
    memory format and, with ``compile=True``, wraps it in ``torch.compile`` (static
    shapes: a short last batch is padded to ``batch_size``, so it never recompiles).
    :meth:`warm_up` runs one batch so that compilation and oneDNN's first-call
    set-up happen before the first real tiles (``compile_s``, ``warmup_s``).

    Parameters
    ----------
    encoder
        An :class:`~napari_seal.models.factory.Encoder`.
    batch_size
        Tiles per forward pass.
    device
        Run on this device (the module is moved there); default: where it is.
    precision, memory_format, compile
        As in :func:`~napari_seal.models.precision.plan_inference`.
    plan
        A ready plan (overrides the three above).
    """

    def __init__(
        self,
        encoder,
        *,
        batch_size: int = 64,
        device: Any = None,
        precision: str = "auto",
        memory_format: str = "auto",
        compile: bool = False,
        plan: InferencePlan | None = None,
    ) -> None:
        import torch

        if batch_size < 1:
            msg = f"batch_size must be at least 1, got {batch_size}"
            raise BadInputError(msg)
        self.encoder = encoder
        self.batch_size = int(batch_size)
        if device is not None:
            encoder.module.to(_device(device))
        self.plan = plan or plan_inference(
            encoder,
            device=device,
            precision=precision,
            memory_format=memory_format,
            compile=compile,
        )
        self.device = _device(self.plan.device)
        if self.device.type == "cpu":
            tune_cpu_allocator()  # no page faults on every batch's activations
        self._fmt = (
            torch.channels_last
            if self.plan.memory_format == "channels_last"
            else torch.contiguous_format
        )
        # the weights follow the plan both ways (a shared encoder may have been
        # converted by an earlier session)
        encoder.module.to(memory_format=self._fmt)
        self.module = encoder.module
        if self.plan.compile:
            self.module = torch.compile(encoder.module, dynamic=False)
        self.compile_s: float | None = None
        self.warmup_s: float | None = None

    def info(self) -> dict[str, Any]:
        """The plan plus ``compile_s`` and ``warmup_s`` (JSON-able)."""
        return {
            **self.plan.to_dict(),
            "compile_s": self.compile_s,
            "warmup_s": self.warmup_s,
        }

    def warm_up(self) -> float:
        """Run one batch of blank tiles; return (and record) its time in seconds."""
        t = int(self.encoder.tile_px)
        blank = np.full((self.batch_size, t, t, 3), 255, np.uint8)
        t0 = time.perf_counter()
        self(blank)
        self.warmup_s = time.perf_counter() - t0
        if self.plan.compile and self.compile_s is None:
            self.compile_s = self.warmup_s
        return self.warmup_s

    def _to_device(self, chunk: Any):
        import torch

        x = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(chunk)
        if self.device.type == "cuda":
            # ship uint8 (4x fewer bytes than float) from pinned memory, normalise there
            return x.pin_memory().to(self.device, non_blocking=True)
        return x

    def __call__(self, images_uint8: Any) -> np.ndarray:
        """Embed ``(n, H, W, 3)`` uint8 tiles; return ``(n, D)`` float32."""
        import torch

        images = _as_batch(self.encoder, images_uint8)
        n = int(images.shape[0])
        out = np.empty((n, self.encoder.embed_dim), dtype=np.float32)
        if n == 0:
            return out
        module = self.encoder.module
        was_training = module.training
        module.eval()
        bs = self.batch_size
        parts: list[tuple[int, int, Any]] = []
        try:
            with torch.inference_mode(), _autocast(self.plan.precision, self.device):
                for start in range(0, n, bs):
                    chunk = np.ascontiguousarray(images[start : start + bs])
                    m = len(chunk)
                    # static shapes: pad the last batch, never recompile
                    if self.plan.compile and m < bs:
                        pad = np.repeat(chunk[-1:], bs - m, axis=0)
                        chunk = np.concatenate([chunk, pad])
                    batch = self.encoder.transform(self._to_device(chunk))
                    batch = batch.to(self.device).contiguous(memory_format=self._fmt)
                    emb = self.module(batch)[:m]
                    parts.append((start, m, emb.float()))
                # one device -> host copy per call, not one sync per batch
                for start, m, emb in parts:
                    out[start : start + m] = emb.cpu().numpy()
        finally:
            module.train(was_training)
        return out


def encode_images(
    encoder,
    images_uint8: Any,
    *,
    batch_size: int = 64,
    device: Any = None,
    precision: str = "auto",
    memory_format: str = "auto",
) -> np.ndarray:
    """Embed RGB tiles with an encoder, without gradients.

    Parameters
    ----------
    encoder
        An :class:`~napari_seal.models.factory.Encoder`.
    images_uint8
        ``(n, H, W, 3)`` or one ``(H, W, 3)`` uint8 array (or tensor, or a sequence of
        equally sized ``(H, W, 3)`` arrays). Tiles that are not ``tile_px`` square are
        resized by the encoder's transform.
    batch_size
        Tiles per forward pass.
    device
        Run on this device (the module is moved there); default: where it is.
    precision
        ``"auto"`` (bf16 where the device runs it natively, else fp32), ``"fp32"``,
        ``"bf16"`` or ``"fp16"`` (CUDA only).
    memory_format
        ``"auto"`` (channels_last for convolutional encoders), ``"contiguous"`` or
        ``"channels_last"``.

    Returns
    -------
    numpy.ndarray
        ``(n, D)`` float32.
    """
    session = InferenceSession(
        encoder,
        batch_size=batch_size,
        device=device,
        precision=precision,
        memory_format=memory_format,
    )
    return session(images_uint8)
