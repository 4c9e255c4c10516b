"""Tissue detection on a low-resolution copy of a slide.

See :mod:`napari_seal.tiling.grid` for the method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_seal.tiling.config import TilingConfig

if TYPE_CHECKING:
    from napari_seal.io.slide.core import Slide

__all__ = [
    "MIN_OTSU_SATURATION",
    "SMOOTHING_UM",
    "TissueMask",
    "otsu_threshold",
    "smoothing_sigma_px",
    "tissue_mask",
]

#: Floor of the automatic (Otsu) saturation threshold.
MIN_OTSU_SATURATION = 0.05
#: Scale (um) over which saturation is averaged before thresholding.
SMOOTHING_UM = 15.0


@dataclass
class TissueMask:
    """A boolean tissue mask on a low-resolution copy of the slide.

    Attributes
    ----------
    mask
        ``(h, w)`` bool, True = tissue.
    downsample
        Level-0 pixels per mask pixel.
    threshold
        The saturation threshold used.
    method
        ``"otsu"`` or ``"user"``.
    """

    mask: np.ndarray
    downsample: float
    threshold: float
    method: str

    @property
    def fraction(self) -> float:
        """Fraction of the slide covered by tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def otsu_threshold(values: np.ndarray, *, bins: int = 256) -> float:
    """Otsu's threshold of values in ``[0, 1]`` (maximises between-class variance)."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0.5
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = total - w0
    m0 = np.cumsum(hist * centres)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rgb = rgb.astype(np.float32)
    mx = rgb.max(axis=-1)
    mn = rgb.min(axis=-1)
    sat = np.divide(mx - mn, mx, out=np.zeros_like(mx), where=mx > 0)
    return sat, mx / 255.0


def smoothing_sigma_px(slide: Slide, downsample: float, long_side_px: int) -> float:
    """Gaussian sigma (mask px) that averages stain texture over about 15 um.

    Without a pixel size, 1/512 of the mask's longest side is used.
    """
    if slide.mpp is not None:
        return float(np.clip(SMOOTHING_UM / (slide.mpp * downsample), 1.0, 8.0))
    return max(1.0, long_side_px / 512)


def tissue_mask(slide: Slide, *, config: TilingConfig | None = None) -> TissueMask:
    """Detect tissue on a low-resolution copy of ``slide``.

    Saturation ``(max - min) / max`` is smoothed (Gaussian over about 15 um, so
    nuclei, stroma and pale cytoplasm average into one tissue class) and
    thresholded: Otsu's threshold (never below ``MIN_OTSU_SATURATION``) unless
    ``config.tissue_threshold`` is given. Nearly black pixels are excluded, then a
    3 x 3 opening and removal of components under 1/10,000 of the image clean it.
    """
    from scipy import ndimage

    if config is None:
        config = TilingConfig()
    thumb = slide.thumbnail(max_px=config.mask_max_px)
    downsample = (
        slide.width_px / thumb.shape[1] + slide.height_px / thumb.shape[0]
    ) / 2
    sat, val = _saturation(thumb)
    sigma = smoothing_sigma_px(slide, downsample, max(thumb.shape[:2]))
    sat = ndimage.gaussian_filter(sat, sigma)
    dark = val < 0.1
    if config.tissue_threshold is None:
        thr = max(otsu_threshold(sat[~dark]), MIN_OTSU_SATURATION)
        method = "otsu"
    else:
        thr, method = float(config.tissue_threshold), "user"
    mask = (sat > thr) & ~dark
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool))
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        min_size = max(4, int(mask.size * 1e-4))
        mask = (sizes >= min_size)[labels]
    return TissueMask(
        mask=mask, downsample=float(downsample), threshold=float(thr), method=method
    )
