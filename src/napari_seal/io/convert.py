"""Import ST sources into the HEST layout, open them in memory, and describe paths.

``import_sample`` = read (``io.st*``) -> open the image (``io.slide``) -> validate ->
resolve the pixel size (``--mpp`` > the source's metadata > the slide's metadata >
the spot-grid estimate) -> write ``wsis/ st/ metadata/`` atomically (``io.hest``).
Every gene and the raw counts are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_seal.errors import BadInputError, MppUnknownError
from napari_seal.io.assemble import sample_from_st
from napari_seal.io.st.contract import KINDS, StData, validate_st
from napari_seal.io.st.grid import resolve_mpp
from napari_seal.io.st.read import read_st
from napari_seal.progress import Progress, drain

if TYPE_CHECKING:
    from napari_seal.io.sample import SpatialSample
    from napari_seal.io.slide.core import Slide

__all__ = [
    "describe",
    "import_sample",
    "iter_import_sample",
    "open_st_path",
]

log = logging.getLogger(__name__)


def open_st_path(
    path: str | Path,
    *,
    kind: str,
    mpp: float | None = None,
    image: str | Path | None = None,
) -> SpatialSample:
    """Read a Space Ranger folder or an ``.h5ad`` (with an image) in memory."""
    return sample_from_st(read_st(kind, path, image=image), mpp=mpp)


def _hest_metadata(sample: SpatialSample, st: StData, kind: str) -> dict[str, Any]:
    from napari_seal import __version__

    meta: dict[str, Any] = dict(st.metadata) if kind == "hest" else {}
    fit = sample.metadata.get("grid_fit")
    meta.update(
        {
            "id": sample.name,
            "st_technology": sample.st_technology,
            "spot_diameter": sample.spot_diameter_um,
            "inter_spot_dist": sample.inter_spot_dist_um,
            "fullres_px_width": sample.slide.width_px,
            "fullres_px_height": sample.slide.height_px,
            "spots_under_tissue": sample.n_spots,
            "nb_genes": sample.n_genes,
            "source_kind": kind,
            "source_files": dict(st.sources),
            "napari_seal_version": __version__,
        }
    )
    if sample.mpp_source in ("metadata", "user"):
        meta["pixel_size_um_embedded"] = sample.mpp
    if fit is not None:
        meta["pixel_size_um_estimated"] = fit["mpp"]
    elif sample.mpp_source == "estimated":
        meta["pixel_size_um_estimated"] = sample.mpp
    meta["napari_seal"] = {
        "mpp": sample.mpp,
        "mpp_source": sample.mpp_source,
        "grid_fit": fit,
        "image_scale": st.image_scale,
        "reader": {} if kind == "hest" else dict(st.metadata),
    }
    return meta


def _check_sources(
    kind: str, sources: Sequence[str | Path], image, counts, spots
) -> Path | None:
    if kind not in KINDS:
        msg = f"unknown import kind {kind!r}; use one of {', '.join(KINDS)}"
        raise BadInputError(msg)
    if kind == "legacy-st":
        if sources:
            msg = (
                "legacy-st takes no SOURCE; give --counts FILE --spots FILE --image "
                "FILE"
            )
            raise BadInputError(msg)
        missing = [
            f
            for f, v in (("--counts", counts), ("--spots", spots), ("--image", image))
            if v is None
        ]
        if missing:
            msg = (
                f"legacy-st import needs {' '.join(missing)}; give --counts FILE "
                "--spots FILE --image FILE"
            )
            raise BadInputError(msg)
        return None
    usage = {
        "visium": "SPACERANGER_DIR",
        "h5ad": "FILE.h5ad --image SLIDE",
        "hest": "HEST_ROOT [--id ID]",
    }[kind]
    if len(sources) != 1:
        msg = f"{kind} import takes exactly one SOURCE ({usage}), got {len(sources)}"
        raise BadInputError(msg)
    if kind == "h5ad" and image is None:
        msg = "h5ad import needs the image the coordinates refer to: --image SLIDE"
        raise BadInputError(msg)
    return Path(sources[0])


def iter_import_sample(
    kind: str,
    sources: Sequence[str | Path],
    *,
    out: str | Path,
    mpp: float | None = None,
    spot_diameter_um: float | None = None,
    sample_id: str | None = None,
    image: str | Path | None = None,
    counts: str | Path | None = None,
    spots: str | Path | None = None,
    array_pitch_um: float = 200.0,
    jpeg_quality: int = 90,
) -> Generator[Progress, None, Path]:
    """Import an ST source into a HEST-layout folder, yielding progress events.

    See :func:`import_sample` for the parameters; returns the written folder.
    """
    from napari_seal.io.hest import _check_out, check_sample_id, write_hest_sample

    out = Path(out)
    source = _check_sources(kind, sources, image, counts, spots)
    _check_out(out)
    if sample_id is not None:
        check_sample_id(sample_id)
    if not array_pitch_um > 0:
        msg = f"--array-pitch-um must be positive, got {array_pitch_um}"
        raise BadInputError(msg)
    total = 3
    yield Progress("import", 0, total, "steps", f"reading {kind} data")
    st = read_st(
        kind,
        source,
        image=image,
        counts=counts,
        spots=spots,
        sample_id=sample_id,
        array_pitch_um=array_pitch_um,
    )
    st.sample_id = check_sample_id(sample_id or st.sample_id)
    yield Progress("import", 1, total, "steps", "opening the image")
    sample = sample_from_st(st, mpp=mpp, spot_diameter_um=spot_diameter_um)
    meta = _hest_metadata(sample, st, kind)
    yield Progress("import", 2, total, "steps", f"writing {out}")
    write_hest_sample(
        out,
        sample_id=sample.name,
        adata=sample.adata,
        image=sample.slide,
        mpp=sample.mpp,
        metadata=meta,
        jpeg_quality=jpeg_quality,
    )
    yield Progress("import", total, total, "steps", f"wrote {out}")
    return out


def import_sample(
    kind: str,
    sources: Sequence[str | Path],
    *,
    out: str | Path,
    mpp: float | None = None,
    spot_diameter_um: float | None = None,
    sample_id: str | None = None,
    image: str | Path | None = None,
    counts: str | Path | None = None,
    spots: str | Path | None = None,
    array_pitch_um: float = 200.0,
    jpeg_quality: int = 90,
    progress: Callable[[Progress], None] | None = None,
) -> Path:
    """Import one ST sample (visium, legacy-st, h5ad, hest) to the HEST layout.

    Parameters
    ----------
    kind
        Source kind.
    sources
        ``[SPACERANGER_DIR]``, ``[FILE.h5ad]`` or ``[HEST_ROOT]``; empty for
        ``legacy-st``.
    out
        Output sample folder (must not exist or be empty); written atomically.
    mpp
        Pixel size override in micrometres per pixel.
    spot_diameter_um
        Spot diameter override in micrometres.
    sample_id
        Sample id (file names); default from the source.
    image
        The H&E image (``h5ad``, ``legacy-st``; full-resolution image for ``visium``).
    counts, spots
        Legacy-ST counts and spot tables.
    array_pitch_um
        Legacy-ST micrometres per array step.
    jpeg_quality
        JPEG quality of the pyramidal TIFF.
    progress
        Called with each :class:`~napari_seal.progress.Progress` event.

    Returns
    -------
    Path
        ``out``.

    Examples
    --------
    >>> import shutil, tempfile
    >>> from napari_seal.io.hest import bundled_sample_path
    >>> tmp = Path(tempfile.mkdtemp())
    >>> import_sample("hest", [bundled_sample_path()], out=tmp / "copy").name
    'copy'
    >>> shutil.rmtree(tmp)
    """
    return drain(
        iter_import_sample(
            kind,
            sources,
            out=out,
            mpp=mpp,
            spot_diameter_um=spot_diameter_um,
            sample_id=sample_id,
            image=image,
            counts=counts,
            spots=spots,
            array_pitch_um=array_pitch_um,
            jpeg_quality=jpeg_quality,
        ),
        progress,
    )


def _slide_info(slide: Slide) -> dict[str, Any]:
    return {
        "mpp": slide.mpp,
        "mpp_source": slide.mpp_source,
        "width_px": slide.width_px,
        "height_px": slide.height_px,
        "levels": slide.n_levels,
        "downsamples": [float(d) for d in slide.downsamples],
    }


def describe(
    path: str | Path, *, mpp: float | None = None, sample_id: str | None = None
) -> dict[str, Any]:
    """Describe a slide or an ST sample: the ``napari-seal info --json`` object.

    Parameters
    ----------
    path
        A slide, a HEST sample folder, a Space Ranger folder or an ``.h5ad``.
    mpp
        Pixel size override.
    sample_id
        Which sample of a multi-sample HEST folder.

    Returns
    -------
    dict
        ``kind`` ("slide" or "sample"), ``name``, ``mpp``, ``mpp_source``, ``width_px``,
        ``height_px``, ``levels``; for samples also ``n_spots``, ``n_genes``,
        ``spot_diameter_um``.

    Examples
    --------
    >>> from napari_seal.io.hest import bundled_sample_path
    >>> d = describe(bundled_sample_path())
    >>> d["kind"], d["n_spots"], d["mpp_source"]
    ('sample', 187, 'estimated')
    """
    from napari_seal.io.sniff import sniff

    path = Path(path)
    if not path.exists():
        msg = f"{path} does not exist; check the path"
        raise BadInputError(msg)
    kind = sniff(path)
    if kind == "slide":
        from napari_seal.io.slide.core import open_slide

        slide = open_slide(path, mpp=mpp)
        return {
            "kind": "slide",
            "name": path.name.split(".")[0],
            **_slide_info(slide),
            "path": str(path.resolve()),
        }
    if kind == "hest" or (
        path.is_file() and path.parent.name in ("st", "wsis", "metadata")
    ):
        from napari_seal.io.hest import read_hest_st

        st = read_hest_st(path, sample_id=sample_id)
    elif kind in ("visium", "h5ad"):
        st = read_st(kind, path, sample_id=sample_id)
    else:
        msg = (
            f"{path} is not a slide, HEST sample folder, Space Ranger folder or .h5ad; "
            "napari-seal info cannot describe it"
        )
        raise BadInputError(msg)
    info: dict[str, Any] = {"kind": "sample", "name": st.sample_id}
    if st.image is None:  # an .h5ad without an image reference: validate as import does
        validate_st(st.adata, where=st.sample_id)
        chosen, source, _ = _mpp_without_image(st, mpp)
        info.update(
            {
                "mpp": chosen,
                "mpp_source": source,
                "width_px": None,
                "height_px": None,
                "levels": 0,
                "image": None,
            }
        )
        spot = st.spot_diameter_um
    else:
        sample = sample_from_st(st, mpp=mpp)
        info.update(_slide_info(sample.slide))
        info["image"] = str(st.image)
        spot = sample.spot_diameter_um
    info.update(
        {
            "n_spots": int(st.adata.n_obs),
            "n_genes": int(st.adata.n_vars),
            "spot_diameter_um": spot,
            "st_technology": st.st_technology,
            "inter_spot_dist_um": st.inter_spot_dist_um,
            "source_kind": kind or "hest",
            "path": str(path.resolve()),
        }
    )
    return info


def _mpp_without_image(st: StData, mpp: float | None) -> tuple[float | None, str, Any]:
    try:
        return resolve_mpp(st, None, mpp=mpp)
    except MppUnknownError:
        return None, "unknown", None
