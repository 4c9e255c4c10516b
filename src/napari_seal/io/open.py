"""Open any supported path as a :class:`SpatialSample` or a :class:`Slide`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari_seal.errors import BadInputError
from napari_seal.io.sniff import sniff

if TYPE_CHECKING:
    from napari_seal.io.sample import SpatialSample
    from napari_seal.io.slide.core import Slide

__all__ = ["open_path", "open_sample"]


def open_path(path: str | Path, *, mpp: float | None = None) -> SpatialSample | Slide:
    """Open a slide, a HEST sample folder, a Space Ranger folder or an ``.h5ad``.

    Parameters
    ----------
    path
        What to open.
    mpp
        Pixel size override in micrometres per level-0 pixel.

    Returns
    -------
    A :class:`~napari_seal.io.sample.SpatialSample` for ST data, else a slide.

    Raises
    ------
    BadInputError
        When the path is not a format napari-seal reads, or its content is invalid.
    """
    path = Path(path)
    kind = sniff(path)
    if kind == "hest":
        from napari_seal.io.hest import load_sample

        sample = load_sample(path, mpp=mpp)
        sample.metadata.setdefault("path", str(path))
        return sample
    if kind == "slide":
        from napari_seal.io.slide.core import open_slide

        return open_slide(path, mpp=mpp)
    if kind in ("visium", "h5ad"):
        from napari_seal.io.convert import open_st_path

        sample = open_st_path(path, kind=kind, mpp=mpp)
        sample.metadata.setdefault("path", str(path))
        return sample
    if not path.exists():
        msg = f"{path} does not exist; check the path"
        raise BadInputError(msg)
    msg = (
        f"{path} is not a format napari-seal reads: expected a slide (SVS, TIFF, "
        "OME-TIFF, NDPI, JPEG, PNG), an .h5ad, a Space Ranger output folder or a "
        "HEST sample folder (wsis/, st/, metadata/)"
    )
    raise BadInputError(msg)


def open_sample(
    *,
    st: str | Path | None = None,
    slide: str | Path | None = None,
    mpp: float | None = None,
) -> SpatialSample | Slide:
    """Open an ST sample with its slide, or a slide alone (the Load widget's call).

    Parameters
    ----------
    st
        A HEST sample folder, a Space Ranger folder or an ``.h5ad``.
    slide
        The H&E image the spot coordinates refer to. Not needed for a HEST folder;
        optional for Space Ranger (default: its hires image, coordinates rescaled).
    mpp
        Pixel size override (micrometres per level-0 pixel).

    Returns
    -------
    The sample (``metadata["path"]`` = the ST path), or the slide when ``st`` is None.
    """
    if st is None and slide is None:
        msg = "nothing to open: choose a slide, an ST sample, or both"
        raise BadInputError(msg)
    if st is None:
        return open_path(Path(slide), mpp=mpp)
    st = Path(st)
    kind = sniff(st)
    if kind == "hest":
        if slide is not None:
            msg = (
                f"{st} is a HEST sample folder, which holds its own slide (wsis/); "
                "leave the slide field empty"
            )
            raise BadInputError(msg)
        sample = open_path(st, mpp=mpp)
    elif kind in ("visium", "h5ad"):
        from napari_seal.io.convert import open_st_path

        sample = open_st_path(st, kind=kind, mpp=mpp, image=slide)
    else:
        msg = (
            f"{st} is not an ST sample napari-seal reads: expected a HEST sample "
            "folder, a Space Ranger output folder or an .h5ad with obsm['spatial'] "
            "(legacy ST tables: import them first with `napari-seal import legacy-st`)"
        )
        raise BadInputError(msg)
    sample.metadata["path"] = str(st)
    return sample
