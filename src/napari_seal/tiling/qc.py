"""Quality checks on a sample: are the spots drawn over tissue?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from napari_seal.io.sample import SpatialSample
    from napari_seal.tiling.config import TilingConfig

__all__ = ["AlignmentReport", "check_alignment"]


@dataclass(frozen=True)
class AlignmentReport:
    """How many spots sit on tissue according to the slide's tissue mask."""

    n_spots: int
    n_on_tissue: int
    fraction_on_tissue: float
    warn_below: float

    @property
    def ok(self) -> bool:
        """True when the fraction of spots on tissue is at least ``warn_below``."""
        return self.fraction_on_tissue >= self.warn_below

    @property
    def message(self) -> str:
        """A one-line summary, with what to check when alignment looks wrong."""
        pct = 100.0 * self.fraction_on_tissue
        text = f"{self.n_on_tissue}/{self.n_spots} spots ({pct:.0f}%) fall on tissue"
        if self.ok:
            return text
        return (
            f"{text}: many spots are on background. Check that the image and the "
            "spot table belong together, that the coordinates are full-resolution "
            "pixels (Space Ranger: tissue_hires_scalef), and the pixel size (--mpp)."
        )


def check_alignment(
    sample: SpatialSample,
    *,
    config: TilingConfig | None = None,
    warn_below: float = 0.8,
) -> AlignmentReport:
    """Return the fraction of spot centres that fall on the slide's tissue mask.

    Parameters
    ----------
    sample
        The sample to check.
    config
        Tissue-mask settings (default :class:`~napari_seal.tiling.config.TilingConfig`).
    warn_below
        Fraction of spots on tissue under which the report is not ``ok``.
    """
    from napari_seal.tiling.config import TilingConfig
    from napari_seal.tiling.tissue import tissue_mask

    mask = tissue_mask(sample.slide, config=config or TilingConfig())
    xy = sample.spots_xy / mask.downsample
    cols = np.clip(np.round(xy[:, 0]).astype(int), 0, mask.mask.shape[1] - 1)
    rows = np.clip(np.round(xy[:, 1]).astype(int), 0, mask.mask.shape[0] - 1)
    inside = (
        (sample.spots_xy[:, 0] >= 0) & (sample.spots_xy[:, 1] >= 0)
        & (sample.spots_xy[:, 0] < sample.slide.width_px)
        & (sample.spots_xy[:, 1] < sample.slide.height_px)
    )
    on = mask.mask[rows, cols] & inside
    n = int(len(on))
    return AlignmentReport(
        n_spots=n,
        n_on_tissue=int(on.sum()),
        fraction_on_tissue=float(on.mean()) if n else 0.0,
        warn_below=warn_below,
    )
