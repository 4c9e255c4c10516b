"""Pixel size from the spot grid: spot technologies, lattice fits and the mpp choice.

JPEG/PNG images carry no pixel size (their dpi header is not one), but every spot
has both a pixel centre and an integer array position on a lattice of known pitch.
A least-squares affine fit of the pixel centres on the array positions, expressed
in micrometres, gives the pixel size in micrometres per pixel (DESIGN 3).

Array positions are passed as ``array_xy`` = (column-like, row-like):

- legacy Spatial Transcriptomics: ``(x, y)``; square lattice, 200 um per step;
- Visium: ``(array_col, array_row)``; hexagonal lattice, ``array_col`` steps by 2
  between neighbours in a row (100 um) and rows are ``100 * sqrt(3) / 2`` um apart.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_seal.errors import BadInputError, MppUnknownError, SpatialDataError

if TYPE_CHECKING:
    from napari_seal.io.slide.core import Slide
    from napari_seal.io.st.contract import StData

__all__ = [
    "TECHNOLOGIES",
    "GridFit",
    "Technology",
    "array_to_um",
    "estimate_mpp_from_grid",
    "estimate_mpp_from_spacing",
    "estimate_st_mpp",
    "resolve_mpp",
    "technology",
]


@dataclass(frozen=True)
class Technology:
    """Geometry of one spot technology.

    Parameters
    ----------
    name
        The HEST ``st_technology`` string.
    lattice
        ``"square"`` or ``"hex"``.
    pitch_um
        Centre-to-centre distance of neighbouring spots in micrometres.
    spot_diameter_um
        Spot diameter in micrometres.
    """

    name: str
    lattice: str
    pitch_um: float
    spot_diameter_um: float


log = logging.getLogger(__name__)
MPP_DISAGREE = 0.10  # warn when metadata and the spot grid differ by more than this

LEGACY_ST = "Spatial Transcriptomics"
VISIUM = "Visium"

TECHNOLOGIES: dict[str, Technology] = {
    LEGACY_ST: Technology(LEGACY_ST, "square", 200.0, 100.0),
    VISIUM: Technology(VISIUM, "hex", 100.0, 55.0),
}


def technology(name: str) -> Technology:
    """Return the geometry of a technology by its HEST name (case-insensitive).

    Examples
    --------
    >>> technology("visium").pitch_um
    100.0
    """
    for key, tech in TECHNOLOGIES.items():
        if key.lower() == str(name).lower():
            return tech
    known = ", ".join(TECHNOLOGIES)
    msg = f"unknown spot technology {name!r}; known: {known}"
    raise SpatialDataError(msg)


def array_to_um(array_xy: np.ndarray, *, lattice: str, pitch_um: float) -> np.ndarray:
    """Convert integer array positions to lattice positions in micrometres.

    Parameters
    ----------
    array_xy
        ``(n, 2)`` array positions, column-like first (see the module docstring).
    lattice
        ``"square"`` (one step = ``pitch_um``) or ``"hex"`` (Visium: a column step of 2
        = ``pitch_um``; rows ``pitch_um * sqrt(3) / 2`` apart).
    pitch_um
        Centre-to-centre distance of neighbouring spots.

    Returns
    -------
    ``(n, 2)`` float64 ``(x, y)`` micrometres.

    Examples
    --------
    >>> array_to_um(np.array([[2, 1]]), lattice="hex", pitch_um=100.0).round(1)
    array([[100. ,  86.6]])
    """
    a = np.asarray(array_xy, dtype=np.float64)
    if lattice == "square":
        return a * pitch_um
    if lattice == "hex":
        return a * np.array([pitch_um / 2.0, pitch_um * math.sqrt(3.0) / 2.0])
    msg = f"unknown lattice {lattice!r}; use 'square' or 'hex'"
    raise ValueError(msg)


@dataclass(frozen=True)
class GridFit:
    """Result of a spot-grid fit.

    Parameters
    ----------
    mpp
        Estimated micrometres per pixel (geometric mean of the two axes).
    mpp_x, mpp_y
        Micrometres per pixel along the two singular directions of the fit.
    residual_rms_px
        Root-mean-square distance of the spots from the fitted lattice, in pixels.
    n_spots
        Number of spots used.
    matrix
        ``(2, 3)`` affine matrix mapping ``(x_um, y_um, 1)`` to ``(x_px, y_px)``.
    method
        ``"affine"`` or ``"spacing"``.
    """

    mpp: float
    mpp_x: float
    mpp_y: float
    residual_rms_px: float
    n_spots: int
    matrix: np.ndarray
    method: str = "affine"

    def to_dict(self) -> dict:
        """Return a JSON-able summary."""
        return {
            "mpp": self.mpp,
            "mpp_x": self.mpp_x,
            "mpp_y": self.mpp_y,
            "residual_rms_px": self.residual_rms_px,
            "n_spots": self.n_spots,
            "method": self.method,
        }


def _finite_pairs(pixel_xy: np.ndarray, array_xy: np.ndarray) -> tuple[np.ndarray, ...]:
    px = np.asarray(pixel_xy, dtype=np.float64).reshape(-1, 2)
    ar = np.asarray(array_xy, dtype=np.float64).reshape(-1, 2)
    if px.shape != ar.shape:
        msg = (
            f"{px.shape[0]} pixel centres but {ar.shape[0]} array positions; "
            "give one array position per spot"
        )
        raise SpatialDataError(msg)
    keep = np.isfinite(px).all(axis=1) & np.isfinite(ar).all(axis=1)
    return px[keep], ar[keep]


def estimate_mpp_from_grid(
    pixel_xy: np.ndarray,
    array_xy: np.ndarray,
    *,
    lattice: str,
    pitch_um: float,
) -> GridFit:
    """Estimate the pixel size by an affine fit of pixel centres on array positions.

    Parameters
    ----------
    pixel_xy
        ``(n, 2)`` spot centres in image pixels ``(x, y)``.
    array_xy
        ``(n, 2)`` array positions, column-like first.
    lattice
        ``"square"`` (legacy ST) or ``"hex"`` (Visium).
    pitch_um
        Centre-to-centre distance of neighbouring spots in micrometres
        (legacy ST 200, Visium 100).

    Returns
    -------
    GridFit
        ``mpp`` = 1 / sqrt(|det A|) where ``A`` maps micrometres to pixels.

    Raises
    ------
    MppUnknownError
        When fewer than 3 spots span the two lattice directions, or the fit is
        degenerate, so that the pixel size must be given with ``--mpp``.

    Examples
    --------
    >>> rc = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    >>> round(estimate_mpp_from_grid(rc * 400.0 + 7, rc, lattice="square",
    ...                              pitch_um=200.0).mpp, 6)
    0.5
    """
    px, ar = _finite_pairs(pixel_xy, array_xy)
    um = array_to_um(ar, lattice=lattice, pitch_um=pitch_um)
    design = np.column_stack([um, np.ones(len(um))])
    if len(px) < 3 or np.linalg.matrix_rank(design) < 3:
        msg = (
            f"cannot estimate the pixel size from {len(px)} spot(s) that do not span "
            "two grid directions; pass the pixel size with --mpp UM"
        )
        raise MppUnknownError(msg)
    coef, *_ = np.linalg.lstsq(design, px, rcond=None)
    matrix = coef.T  # (2, 3): px = M[:, :2] @ um + M[:, 2]
    lin = matrix[:, :2]
    det = abs(float(np.linalg.det(lin)))
    if not np.isfinite(det) or det <= 0:
        msg = "the spot grid fit is degenerate; pass the pixel size with --mpp UM"
        raise MppUnknownError(msg)
    sv = np.linalg.svd(lin, compute_uv=False)  # px per um along the two axes
    resid = px - design @ coef
    rms = float(np.sqrt(np.mean(np.sum(resid**2, axis=1))))
    return GridFit(
        mpp=1.0 / math.sqrt(det),
        mpp_x=float(1.0 / sv[0]),
        mpp_y=float(1.0 / sv[1]),
        residual_rms_px=rms,
        n_spots=len(px),
        matrix=matrix,
    )


def estimate_mpp_from_spacing(pixel_xy: np.ndarray, *, pitch_um: float) -> GridFit:
    """Estimate the pixel size from the median nearest-neighbour spot distance.

    Used when the array positions are unknown (e.g. an ``.h5ad`` with only
    ``obsm["spatial"]``): on a regular lattice every spot's nearest neighbour is one
    pitch away.

    Parameters
    ----------
    pixel_xy
        ``(n, 2)`` spot centres in image pixels.
    pitch_um
        Centre-to-centre distance of neighbouring spots in micrometres.

    Returns
    -------
    GridFit
        With ``method="spacing"``.

    Examples
    --------
    >>> xy = np.array([[0, 0], [200, 0], [0, 200], [200, 200]], float)
    >>> estimate_mpp_from_spacing(xy, pitch_um=100.0).mpp
    0.5
    """
    from scipy.spatial import cKDTree

    px = np.asarray(pixel_xy, dtype=np.float64).reshape(-1, 2)
    px = px[np.isfinite(px).all(axis=1)]
    if len(px) < 2:
        msg = "cannot estimate the pixel size from fewer than 2 spots; pass --mpp UM"
        raise MppUnknownError(msg)
    dist, _ = cKDTree(px).query(px, k=2)
    nn = dist[:, 1]
    med = float(np.median(nn))
    if not np.isfinite(med) or med <= 0:
        msg = (
            "spots share the same position, so the pixel size cannot be estimated; "
            "pass --mpp UM"
        )
        raise MppUnknownError(msg)
    rms = float(np.sqrt(np.mean((nn - med) ** 2)))
    mpp = pitch_um / med
    return GridFit(
        mpp=mpp,
        mpp_x=mpp,
        mpp_y=mpp,
        residual_rms_px=rms,
        n_spots=len(px),
        matrix=np.array([[1 / mpp, 0.0, 0.0], [0.0, 1 / mpp, 0.0]]),
        method="spacing",
    )


def estimate_st_mpp(st: StData) -> GridFit | None:
    """Estimate the pixel size of ``st.image`` from its spot grid, or ``None``.

    Uses the affine lattice fit when array positions are known, else the median
    nearest-neighbour spacing; needs a known technology (pitch).
    """
    if st.st_technology is None or st.grid_xy is None or st.inter_spot_dist_um is None:
        return None
    try:
        tech = technology(st.st_technology)
    except SpatialDataError:
        return None
    try:
        if st.grid_array_xy is not None:
            fit = estimate_mpp_from_grid(
                st.grid_xy,
                st.grid_array_xy,
                lattice=tech.lattice,
                pitch_um=st.inter_spot_dist_um,
            )
        else:
            fit = estimate_mpp_from_spacing(st.grid_xy, pitch_um=st.inter_spot_dist_um)
    except MppUnknownError as err:
        log.info("no spot-grid estimate: %s", err)
        return None
    pitch_px = st.inter_spot_dist_um / fit.mpp
    if fit.residual_rms_px > 0.25 * pitch_px:
        msg = (
            f"the spots fit a {tech.lattice} grid poorly (rms "
            f"{fit.residual_rms_px:.0f} px for "
            f"a {pitch_px:.0f} px pitch); the estimated pixel size {fit.mpp:.3f} um/px "
            "may be "
            "wrong: pass --mpp UM"
        )
        log.info(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    return fit


def resolve_mpp(
    st: StData,
    slide: Slide | None,
    *,
    mpp: float | None = None,
) -> tuple[float, str, GridFit | None]:
    """Choose the pixel size: ``mpp`` > the source's metadata > slide metadata > grid.

    Returns
    -------
    tuple
        ``(mpp, mpp_source, grid_fit)``; ``grid_fit`` is the spot-grid estimate when
        one could be made (also kept when another source wins, as a cross-check).

    Raises
    ------
    MppUnknownError
        When nothing states or estimates the pixel size.
    """
    fit = estimate_st_mpp(st)
    if mpp is not None:
        if not (mpp > 0 and mpp < 1e4):
            msg = f"--mpp must be a positive number of micrometres per pixel, got {mpp}"
            raise BadInputError(msg)
        return float(mpp), "user", fit
    if st.mpp is not None:
        chosen, source = float(st.mpp), st.mpp_source
    elif slide is not None and slide.mpp is not None and slide.mpp_source == "metadata":
        chosen, source = float(slide.mpp), "metadata"
    elif fit is not None:
        return fit.mpp, "estimated", fit
    else:
        msg = (
            "the pixel size is unknown: the image has no pixel-size metadata and the "
            "spots "
            "give no grid to estimate it from; pass it with --mpp UM (micrometres per "
            "pixel)"
        )
        raise MppUnknownError(msg)
    if fit is not None and abs(fit.mpp - chosen) > MPP_DISAGREE * chosen:
        msg = (
            f"the {source} pixel size {chosen:.4f} um/px differs from the spot-grid "
            f"estimate {fit.mpp:.4f} um/px; pass --mpp UM if the metadata is wrong"
        )
        log.info(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    return chosen, source, fit
