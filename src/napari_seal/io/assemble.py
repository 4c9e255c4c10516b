"""Assemble a :class:`~napari_seal.io.sample.SpatialSample` from an ST reader's output.

Opens the image, validates the spots against it, resolves the pixel size (``mpp`` >
the source's metadata > the slide's metadata > the spot-grid estimate) and records
spot geometry. Shared by :mod:`napari_seal.io.hest` (loading) and
:mod:`napari_seal.io.convert` (importing).
"""

from __future__ import annotations

from napari_seal.errors import BadInputError
from napari_seal.io.sample import SpatialSample
from napari_seal.io.slide.core import Slide, open_slide
from napari_seal.io.st.contract import StData, validate_st
from napari_seal.io.st.grid import resolve_mpp

__all__ = ["sample_from_st"]


def _open_image(st: StData) -> Slide:
    if st.image is None:
        msg = (
            "no image for the spots; pass the H&E image the coordinates refer to with "
            "--image FILE"
        )
        raise BadInputError(msg)
    return open_slide(st.image)


def sample_from_st(
    st: StData,
    *,
    mpp: float | None = None,
    spot_diameter_um: float | None = None,
    slide: Slide | None = None,
) -> SpatialSample:
    """Open the image of ``st``, validate the spots against it and build a sample.

    Parameters
    ----------
    st
        What a reader returned.
    mpp
        Pixel size override (``mpp_source="user"``).
    spot_diameter_um
        Spot diameter override in micrometres.
    slide
        An already opened image (default: open ``st.image``).

    Returns
    -------
    SpatialSample
        With ``adata.uns["napari_seal"]`` filled and the grid fit in ``metadata``.
    """
    slide = slide if slide is not None else _open_image(st)
    validate_st(
        st.adata, image_size=(slide.width_px, slide.height_px), where=st.sample_id
    )
    chosen, source, fit = resolve_mpp(st, slide, mpp=mpp)
    if slide.mpp != chosen or slide.mpp_source != source:
        slide = slide.with_mpp(chosen, source=source)
    if spot_diameter_um is not None and not 0 < spot_diameter_um < float("inf"):
        msg = (
            "--spot-diameter-um must be a positive number of micrometres (Visium 55, "
            f"legacy ST 100), got {spot_diameter_um}"
        )
        raise BadInputError(msg)
    spot = spot_diameter_um if spot_diameter_um is not None else st.spot_diameter_um
    if spot is None or not spot > 0:
        msg = (
            "the spot diameter is unknown for this technology; pass it with "
            "--spot-diameter-um UM (Visium 55, legacy ST 100)"
        )
        raise BadInputError(msg)
    dist = st.inter_spot_dist_um or 2.0 * spot
    st.adata.uns["napari_seal"] = {
        "mpp": chosen,
        "mpp_source": source,
        "spot_diameter_um": float(spot),
        "inter_spot_dist_um": float(dist),
    }
    meta = {
        **st.metadata,
        "grid_fit": fit.to_dict() if fit else None,
        "image_scale": st.image_scale,
        "sources": dict(st.sources),
    }
    return SpatialSample(
        slide=slide,
        adata=st.adata,
        mpp=chosen,
        spot_diameter_um=float(spot),
        name=st.sample_id,
        inter_spot_dist_um=float(dist),
        mpp_source=source,
        st_technology=st.st_technology or "unknown",
        metadata=meta,
    )
