"""Image augmentation for SEAL training, in plain torch (batched, seeded).

SEAL trains with ``augment: 'hard'`` but does not publish the transforms
(``reference/seal_method.md`` 4.3). napari-seal defines three modes (docs/training.md):

``none``
    identity.
``soft``
    random 90-degree rotation and horizontal flip (the 8 symmetries of a square: tissue
    has no orientation) + brightness/contrast jitter in ``[0.9, 1.1]``.
``hard``
    the symmetries; a random resized crop (area ``U(0.8, 1)``, aspect ratio
    ``U(3/4, 4/3)`` on a log scale) resampled back to the tile size; HED stain jitter
    (each haematoxylin/eosin/DAB optical density scaled by ``U(0.95, 1.05)`` and shifted
    by ``U(-0.05, 0.05)``); with p=0.8 brightness, contrast, saturation in
    ``[0.85, 1.15]`` and a hue rotation of ``U(-0.04, 0.04)`` turns; with p=0.2 a
    Gaussian blur (sigma ``U(0.1, 1.5)`` px); with p=0.3 Gaussian noise (std
    ``U(0, 0.03)``). Output is clamped to ``[0, 1]``.

Every random number comes from the ``torch.Generator`` passed in, drawn on the CPU in a
fixed order, so a run (and a resumed run) sees the same augmentations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["MODES", "augment_batch"]

MODES = ("none", "soft", "hard")

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) in RGB OD space.
_RGB_FROM_HED = torch.tensor(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64
)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
# RGB <-> YIQ for hue rotation.
_YIQ_FROM_RGB = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
    dtype=torch.float64,
)
_RGB_FROM_YIQ = torch.linalg.inv(_YIQ_FROM_RGB)


def _u(
    n: int, low: float, high: float, g: torch.Generator, *shape: int
) -> torch.Tensor:
    return low + (high - low) * torch.rand((n, *shape), generator=g)


def _dihedral(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    ks = torch.randint(0, 4, (n,), generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    # each of the 8 (rotation, flip) groups is written once, from x
    out = torch.empty_like(x)
    for k in range(4):
        for flip in (False, True):
            idx = ((ks == k) & (flips == flip)).nonzero().flatten().to(x.device)
            if idx.numel():
                y = torch.rot90(x[idx], k, dims=(2, 3)) if k else x[idx]
                out[idx] = y.flip(3) if flip else y
    return out


def _resized_crop(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    area = _u(n, 0.8, 1.0, g)
    log_r = _u(n, math.log(3 / 4), math.log(4 / 3), g)
    ratio = torch.exp(log_r)
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(n, generator=g) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=g) * 2 - 1) * (1 - h)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = w
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(
        x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def _apply_affine(
    x: torch.Tensor, mats: torch.Tensor, offset: torch.Tensor
) -> torch.Tensor:
    """Per-image colour map ``y = M x + o`` on ``(n, 3, H, W)``, one batched matmul."""
    n, c, h, w = x.shape
    y = torch.baddbmm(offset.to(x)[:, :, None], mats.to(x), x.reshape(n, c, h * w))
    return y.reshape(n, c, h, w)


def _hed_jitter(
    x: torch.Tensor, g: torch.Generator, sigma: float = 0.05
) -> torch.Tensor:
    # OD' = OD @ (HED^-1 diag(alpha) HED) + beta @ HED: scale and shift each stain's
    # optical density; folded into one 3x3 map per image.
    n = x.shape[0]
    alpha = _u(n, 1 - sigma, 1 + sigma, g, 3).double()
    beta = _u(n, -sigma, sigma, g, 3).double()
    mats = _HED_FROM_RGB.T @ torch.diag_embed(alpha) @ _RGB_FROM_HED.T  # (n, 3, 3)
    offset = beta @ _RGB_FROM_HED  # (n, 3)
    # exp(-(M @ -log x + o)) == exp(M @ log x - o) bit for bit (negation is exact);
    # in place, so the ~100 MB batch is not copied at every step
    log_x = x.clamp_min(1e-6).log_()
    return _apply_affine(log_x, mats, -offset).exp_().clamp_(0, 1)


_GREY = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)


def _colour_jitter(
    x: torch.Tensor, g: torch.Generator, *, strength: float, saturation_hue: bool
) -> torch.Tensor:
    # brightness, contrast (around the image's mean grey), saturation (blend with grey)
    # and hue (rotation of the IQ chroma plane) are all affine in RGB: compose them
    # into one 3x3 map + offset per image, then clamp once.
    n = x.shape[0]
    bright = _u(n, 1 - strength, 1 + strength, g).double()
    contrast = _u(n, 1 - strength, 1 + strength, g).double()
    eye = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
    mats = eye * bright[:, None, None]
    mean_grey = (x.mean(dim=(2, 3)).double().cpu() @ _GREY) * bright  # (n,)
    mats = mats * contrast[:, None, None]
    offset = ((1 - contrast) * mean_grey)[:, None].expand(n, 3).clone()
    if saturation_hue:
        sat = _u(n, 1 - strength, 1 + strength, g).double()
        hue = _u(n, -0.04, 0.04, g).double() * 2 * math.pi
        grey_proj = torch.ones(3, 1, dtype=torch.float64) @ _GREY[None, :]
        s_mat = eye * sat[:, None, None] + (1 - sat)[:, None, None] * grey_proj
        cos, sin = torch.cos(hue), torch.sin(hue)
        rot = torch.zeros(n, 3, 3, dtype=torch.float64)
        rot[:, 0, 0] = 1
        rot[:, 1, 1] = cos
        rot[:, 1, 2] = -sin
        rot[:, 2, 1] = sin
        rot[:, 2, 2] = cos
        h_mat = _RGB_FROM_YIQ @ rot @ _YIQ_FROM_RGB
        post = h_mat @ s_mat
        mats = post @ mats
        offset = (post @ offset[:, :, None])[:, :, 0]
    return _apply_affine(x, mats, offset).clamp(0, 1)


def _blur(x: torch.Tensor, g: torch.Generator, *, ksize: int = 7) -> torch.Tensor:
    n, c, h, w = x.shape
    sigma = _u(n, 0.1, 1.5, g).to(x)
    r = torch.arange(ksize, dtype=x.dtype, device=x.device) - ksize // 2
    k1 = torch.exp(-(r[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)  # (n, k)
    k1 = k1.repeat_interleave(c, dim=0)  # (n*c, k)
    y = F.pad(x.reshape(1, n * c, h, w), (ksize // 2,) * 4, mode="reflect")
    y = F.conv2d(y, k1[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k1[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def _on_subset(x: torch.Tensor, mask: torch.Tensor, fn) -> torch.Tensor:
    """Apply ``fn`` to the images selected by ``mask`` only (random draws for those).

    Writes into ``x`` (an intermediate of :func:`augment_batch`, never the caller's).
    """
    idx = mask.nonzero().flatten()
    if idx.numel() == 0:
        return x
    idx = idx.to(x.device)
    x[idx] = fn(x[idx])
    return x


def augment_batch(
    images: torch.Tensor, *, mode: str = "hard", generator: torch.Generator
) -> torch.Tensor:
    """Augment a batch of RGB images.

    Parameters
    ----------
    images
        ``(B, 3, H, W)`` float in ``[0, 1]``, or uint8 (converted to float).
    mode
        ``"none"``, ``"soft"`` or ``"hard"`` (see the module docstring).
    generator
        CPU ``torch.Generator`` that supplies every random number.

    Returns
    -------
    ``(B, 3, H, W)`` float tensor in ``[0, 1]`` on the input's device.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(2, 3, 16, 16)
    >>> augment_batch(x, mode="hard", generator=g).shape
    torch.Size([2, 3, 16, 16])
    """
    if mode not in MODES:
        msg = f"augment mode {mode!r} is unknown; choose one of {', '.join(MODES)}"
        raise ValueError(msg)
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    if mode == "none":
        return x
    n = x.shape[0]
    x = _dihedral(x, generator)
    if mode == "soft":
        return _colour_jitter(x, generator, strength=0.1, saturation_hue=False)
    x = _resized_crop(x, generator)
    x = _hed_jitter(x, generator)
    p_colour = torch.rand(n, generator=generator) < 0.8
    p_blur = torch.rand(n, generator=generator) < 0.2
    p_noise = torch.rand(n, generator=generator) < 0.3
    x = _on_subset(
        x,
        p_colour,
        lambda y: _colour_jitter(y, generator, strength=0.15, saturation_hue=True),
    )
    x = _on_subset(x, p_blur, lambda y: _blur(y, generator))

    def _noise(y: torch.Tensor) -> torch.Tensor:
        std = _u(y.shape[0], 0.0, 0.03, generator)[:, None, None, None].to(y)
        return y + torch.randn(y.shape, generator=generator).to(y) * std

    x = _on_subset(x, p_noise, _noise)
    return x.clamp_(0, 1)
