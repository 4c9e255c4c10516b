"""``SpatialSample``: one slide + one AnnData + geometry, in one coordinate system.

Coordinates: spot centres live in ``adata.obsm["spatial"]`` as ``(x, y)`` level-0
pixel coordinates (as scanpy and HEST store them). napari wants ``(row, col)``;
:func:`xy_to_napari` is the single place where the order is swapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData

    from napari_seal.io.slide.core import Slide

__all__ = ["SpatialSample", "xy_to_napari"]


def xy_to_napari(xy: np.ndarray) -> np.ndarray:
    """Convert ``(x, y)`` pixel coordinates to napari's ``(row, col)`` order.

    Parameters
    ----------
    xy
        Array of shape ``(n, 2)`` with ``x`` (column) first.

    Returns
    -------
    Array of shape ``(n, 2)`` with ``y`` (row) first.

    Examples
    --------
    >>> xy_to_napari(np.array([[10.0, 2.0]]))
    array([[ 2., 10.]])
    """
    xy = np.asarray(xy)
    return xy[:, ::-1].copy()


@dataclass
class SpatialSample:
    """A slide and its spatial-transcriptomics spots in one coordinate system.

    Parameters
    ----------
    slide
        The lazy multiscale slide (level 0 = full resolution).
    adata
        Spots x genes; raw counts in ``X``; ``obsm["spatial"]`` = level-0 ``(x, y)`` px.
    mpp
        Micrometres per level-0 pixel.
    spot_diameter_um
        Spot diameter in micrometres (legacy ST 100, Visium 55).
    name
        Sample id.
    inter_spot_dist_um
        Centre-to-centre spot distance in micrometres (legacy ST 200, Visium 100).
    mpp_source
        ``"metadata"``, ``"estimated"`` (from the spot grid) or ``"user"``.
    st_technology
        ``"Spatial Transcriptomics"``, ``"Visium"``, ...
    metadata
        Extra HEST-style metadata.
    """

    slide: Slide
    adata: AnnData
    mpp: float
    spot_diameter_um: float
    name: str
    inter_spot_dist_um: float = 100.0
    mpp_source: str = "metadata"
    st_technology: str = "Visium"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def spots_xy(self) -> np.ndarray:
        """Spot centres as ``(n, 2)`` level-0 ``(x, y)`` pixels (float64)."""
        return np.asarray(self.adata.obsm["spatial"], dtype=np.float64)

    @property
    def spots_napari_um(self) -> np.ndarray:
        """Spot centres in napari world coordinates: ``(row, col)`` micrometres."""
        return xy_to_napari(self.spots_xy) * self.mpp

    @property
    def spot_diameter_px(self) -> float:
        """Spot diameter in level-0 pixels."""
        return self.spot_diameter_um / self.mpp

    @property
    def n_spots(self) -> int:
        """Number of spots."""
        return int(self.adata.n_obs)

    @property
    def n_genes(self) -> int:
        """Number of genes."""
        return int(self.adata.n_vars)
