"""``TilingConfig``: tile geometry and tissue-detection settings (validated, frozen).

Shared by the tissue mask (:mod:`~napari_seal.tiling.tissue`) and the tile grid
(:mod:`~napari_seal.tiling.grid`); its JSON copy is written into every embedding store.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from napari_seal.errors import BadInputError

__all__ = ["TilingConfig"]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return _is_int(v) or (isinstance(v, (float, np.floating)) and math.isfinite(v))


@dataclass(frozen=True)
class TilingConfig:
    """Geometry of the patch grid and of tissue detection.

    Parameters
    ----------
    tile_px
        Tile side in pixels at ``mpp`` (the encoder's input size).
    mpp
        Tile resolution in micrometres per pixel (the encoder's).
    stride_px
        Distance between tile origins in pixels at ``mpp``; ``None`` = ``tile_px``
        (no overlap). Half the tile gives a map twice as fine at 4 x the compute.
    tissue_threshold
        Saturation threshold in ``[0, 1]``; ``None`` = Otsu (see module docstring).
    min_tissue_fraction
        Minimum fraction of a tile covered by tissue to embed it.
    mask_max_px
        Longest side of the low-resolution image the mask is computed on.
    """

    tile_px: int = 224
    mpp: float = 0.5
    stride_px: int | None = None
    tissue_threshold: float | None = None
    min_tissue_fraction: float = 0.1
    mask_max_px: int = 2048

    def __post_init__(self) -> None:
        problems = []
        if not _is_int(self.tile_px) or self.tile_px < 8:
            problems.append(f"tile_px must be an integer >= 8, got {self.tile_px!r}")
        if not (_is_num(self.mpp) and self.mpp > 0):
            problems.append(f"mpp must be a positive number of um/px, got {self.mpp!r}")
        if self.stride_px is not None and (
            not _is_int(self.stride_px) or self.stride_px < 1
        ):
            problems.append(
                "stride_px (--stride-px) must be a positive integer, got "
                f"{self.stride_px!r}"
            )
        thr = self.tissue_threshold
        if thr is not None and not (_is_num(thr) and 0 <= thr <= 1):
            problems.append(
                f"tissue_threshold (--tissue-threshold) must be in [0, 1], got {thr!r}"
            )
        frac = self.min_tissue_fraction
        if not (_is_num(frac) and 0 <= frac <= 1):
            problems.append(f"min_tissue_fraction must be in [0, 1], got {frac!r}")
        if not _is_int(self.mask_max_px) or self.mask_max_px < 64:
            problems.append(
                f"mask_max_px must be an integer >= 64, got {self.mask_max_px!r}"
            )
        if problems:
            msg = "invalid tiling configuration: " + "; ".join(problems)
            raise BadInputError(msg)

    @property
    def stride(self) -> int:
        """The effective stride in pixels at ``mpp``."""
        return int(self.stride_px if self.stride_px is not None else self.tile_px)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TilingConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            msg = (
                f"unknown tiling configuration keys {sorted(unknown)}; known: "
                f"{sorted(names)}"
            )
            raise BadInputError(msg)
        return cls(**d)
