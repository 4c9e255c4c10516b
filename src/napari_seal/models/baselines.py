"""The ``color-stats`` baseline: 28 colour statistics per patch, no learned weights.

A frozen foundation model should beat simple colour statistics on expression
prediction; if it does not, the benchmark is mostly measuring stain intensity and cell
density. ``ColorStats`` maps a ``(B, 3, H, W)`` RGB batch in ``[0, 1]`` (the registry's
transform uses mean 0 and std 1, so the module sees plain RGB) to ``(B, 28)``:

====  ======================================================================
 #    feature
====  ======================================================================
0-14  per RGB channel (R, G, B): mean, std, 10th, 50th, 90th percentile
15-20 per HSV channel: hue circular mean and circular spread, saturation
      mean/std, value mean/std
21-26 per HED channel (haematoxylin, eosin, DAB; Ruifrok & Johnston colour
      deconvolution of optical density): mean/std
27    tissue fraction: share of pixels with HSV saturation > 0.07
====  ======================================================================

Details: hue is an angle, so its mean is the circular mean ``atan2(E sin, E cos)``
mapped to ``[0, 1)`` and its spread is the circular standard deviation
``sqrt(-2 ln R) / (2 pi)`` (``R`` the mean resultant length), both from saturated
pixels' hues weighted by saturation (grey pixels have no defined hue). Optical
density is
``-log10(max(I, 1/255))``; the stain matrix rows are H (0.65, 0.70, 0.29), E (0.07,
0.99, 0.11), DAB (0.27, 0.57, 0.78) (Ruifrok & Johnston 2001), each normalised to unit
length, and concentrations are ``OD @ inverse(matrix)``. Standard deviations are
population (``ddof=0``); percentiles interpolate linearly as ``torch.quantile``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["FEATURE_NAMES", "ColorStats", "build_color_stats"]

_RGB = [f"{c}_{s}" for c in "rgb" for s in ("mean", "std", "p10", "p50", "p90")]
FEATURE_NAMES: tuple[str, ...] = (
    *_RGB,
    "hue_circmean",
    "hue_circstd",
    "sat_mean",
    "sat_std",
    "val_mean",
    "val_std",
    "hema_mean",
    "hema_std",
    "eosin_mean",
    "eosin_std",
    "dab_mean",
    "dab_std",
    "tissue_fraction",
)

#: HSV saturation above which a pixel counts as tissue.
TISSUE_SATURATION = 0.07

_RGB_FROM_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))


class ColorStats(nn.Module):
    """28 colour statistics per image (see the module docstring for the list)."""

    def __init__(self) -> None:
        super().__init__()
        m = torch.tensor(_RGB_FROM_HED, dtype=torch.float64)
        m = m / m.norm(dim=1, keepdim=True)
        self.register_buffer(
            "hed_from_rgb", torch.linalg.inv(m).float(), persistent=False
        )
        self.register_buffer(
            "quantiles", torch.tensor([0.1, 0.5, 0.9]), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map RGB in ``[0, 1]`` ``(B, 3, H, W)`` to ``(B, 28)`` float32."""
        x = x.float().clamp(0.0, 1.0).flatten(2)  # (B, 3, N)
        rgb_mean = x.mean(-1)
        rgb_std = x.std(-1, correction=0)
        q = _quantiles(x, self.quantiles)  # (B, 3, 3)
        rgb = torch.cat([rgb_mean[..., None], rgb_std[..., None], q], dim=-1).flatten(1)

        mx, _ = x.max(1)
        mn, _ = x.min(1)
        delta = mx - mn
        sat = torch.where(mx > 0, delta / mx.clamp_min(1e-12), torch.zeros_like(mx))
        hue = _hue(x, mx, delta)  # in [0, 1)
        w = sat
        wsum = w.sum(-1).clamp_min(1e-12)
        ang = 2 * math.pi * hue
        c = (w * torch.cos(ang)).sum(-1) / wsum
        s = (w * torch.sin(ang)).sum(-1) / wsum
        hue_mean = torch.remainder(torch.atan2(s, c) / (2 * math.pi), 1.0)
        r = torch.sqrt(c * c + s * s).clamp(1e-12, 1.0)
        hue_std = torch.sqrt(-2 * torch.log(r)) / (2 * math.pi)
        hsv = torch.stack(
            [
                hue_mean,
                hue_std,
                sat.mean(-1),
                sat.std(-1, correction=0),
                mx.mean(-1),
                mx.std(-1, correction=0),
            ],
            dim=-1,
        )

        od = -torch.log10(x.clamp_min(1.0 / 255.0))  # (B, 3, N)
        hed = torch.einsum("bcn,cd->bdn", od, self.hed_from_rgb)
        hed_stats = torch.stack(
            [hed.mean(-1), hed.std(-1, correction=0)], dim=-1
        ).flatten(1)

        tissue = (sat > TISSUE_SATURATION).float().mean(-1, keepdim=True)
        return torch.cat([rgb, hsv, hed_stats, tissue], dim=-1)


def _quantiles(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Linear-interpolation quantiles along the last axis (as ``torch.quantile``).

    ``torch.quantile`` refuses inputs above 16 M elements (a batch of ~110 tiles), so
    sort once and interpolate.
    """
    srt, _ = torch.sort(x, dim=-1)
    pos = q.to(x.dtype) * (x.shape[-1] - 1)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    frac = pos - lo.to(x.dtype)
    return srt[..., lo] * (1 - frac) + srt[..., hi] * frac


def _hue(x: torch.Tensor, mx: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    d = delta.clamp_min(1e-12)
    h = torch.where(
        mx == r,
        torch.remainder((g - b) / d, 6.0),
        torch.where(mx == g, (b - r) / d + 2.0, (r - g) / d + 4.0),
    )
    h = torch.where(delta > 0, h / 6.0, torch.zeros_like(h))
    return torch.remainder(h, 1.0)


def build_color_stats(spec) -> ColorStats:
    """Registry builder for ``color-stats``."""
    del spec
    return ColorStats()
