"""Input transforms: uint8 RGB tiles -> normalised float tensors for an encoder.

A :class:`TileTransform` is a small picklable callable (it travels to dask workers).
It accepts one ``(H, W, 3)`` tile or a batch ``(B, H, W, 3)`` as a NumPy array or a
torch tensor of ``uint8`` (an alpha channel is dropped) and returns a float32 tensor
``(B, 3, tile_px, tile_px)`` normalised with the encoder's mean and std.

Geometry, as the model cards give it: when a tile is not already ``tile_px`` square,
its shorter side is resized to ``resize_px`` (default ``tile_px``) with antialiasing
and the centre ``tile_px`` square is cropped (``Resize(resize_px)`` then
``CenterCrop(tile_px)``). Prov-GigaPath's card resizes to 256 and crops 224, so a
224 px tile is first enlarged to 256 px: ``resize_px=256`` keeps that behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError

__all__ = ["TileTransform"]


@dataclass(frozen=True)
class TileTransform:
    """Map uint8 RGB tiles to the normalised float input of an encoder.

    Parameters
    ----------
    tile_px
        Side of the square input the network takes.
    mean, std
        Per-channel normalisation on the ``[0, 1]`` scale.
    resize_px
        Shorter-side size before the centre crop (``None`` = ``tile_px``). Tiles of
        exactly ``tile_px`` x ``tile_px`` are not resampled unless ``resize_px``
        differs from ``tile_px``.
    interpolation
        ``"bilinear"`` or ``"bicubic"`` (antialiased when shrinking).

    Examples
    --------
    >>> t = TileTransform(4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> t(np.full((4, 4, 3), 255, np.uint8)).shape
    torch.Size([1, 3, 4, 4])
    """

    tile_px: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_px: int | None = None
    interpolation: str = "bilinear"

    def __call__(self, images: Any):
        """Map uint8 RGB(A) ``(H, W, C)`` or ``(B, H, W, C)`` to ``(B, 3, T, T)``."""
        import torch
        import torch.nn.functional as F

        x = (
            images
            if isinstance(images, torch.Tensor)
            else torch.from_numpy(np.ascontiguousarray(np.asarray(images)))
        )
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[-1] not in (3, 4):
            msg = (
                "expected RGB tiles shaped (H, W, 3) or (B, H, W, 3), got "
                f"{tuple(x.shape)}; "
                "pass uint8 RGB arrays (convert greyscale images to RGB first)"
            )
            raise BadInputError(msg)
        if x.dtype != torch.uint8:
            msg = (
                f"expected uint8 RGB tiles (0-255), got dtype {x.dtype}; convert with "
                "np.clip(img, 0, 255).astype(np.uint8)"
            )
            raise BadInputError(msg)
        x = x[..., :3].permute(0, 3, 1, 2).float().div_(255.0)
        x = self._resize_crop(x, F)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _resize_crop(self, x, F):  # noqa: N803 - F is torch.nn.functional
        t = int(self.tile_px)
        r = int(self.resize_px or t)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if (h, w) == (t, t) and r == t:
            return x
        if min(h, w) != r:
            scale = r / min(h, w)
            size = (max(r, round(h * scale)), max(r, round(w * scale)))
            x = F.interpolate(
                x,
                size=size,
                mode=self.interpolation,
                align_corners=False,
                antialias=True,
            )
            if self.interpolation == "bicubic":
                x = x.clamp_(0.0, 1.0)
            h, w = size
        top = (h - t) // 2
        left = (w - t) // 2
        return x[..., top : top + t, left : left + t]
