"""The canonical on-disk sample: the HEST-1k layout (DESIGN 3).

A sample folder holds ``wsis/<id>.tif`` (pyramidal TIFF with the pixel size embedded),
``st/<id>.h5ad`` (raw counts, ``obsm["spatial"]`` = level-0 ``(x, y)`` pixels) and
``metadata/<id>.json`` (``pixel_size_um_estimated`` and/or ``pixel_size_um_embedded``,
``spot_diameter`` and ``inter_spot_dist`` in micrometres, ``st_technology``, ``id``...).
HEST tools read our folders and we read theirs; a folder with several samples needs
an id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_seal.errors import (
    BadInputError,
    OutputPathError,
    SealError,
    SpatialDataError,
)
from napari_seal.io.assemble import sample_from_st
from napari_seal.io.st.contract import READ_ERRORS, StData, build_adata, validate_st
from napari_seal.io.st.visium import read_h5ad_st, read_spaceranger

if TYPE_CHECKING:
    from anndata import AnnData

    from napari_seal.io.sample import SpatialSample

__all__ = [
    "bundled_sample_path",
    "check_sample_id",
    "hest_ids",
    "load_sample",
    "mpp_from_metadata",
    "read_hest_st",
    "write_hest_sample",
]

log = logging.getLogger(__name__)

WSI_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff", ".svs", ".ndpi")
_ID_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
BUNDLED = "her2st_C2"


def check_sample_id(sample_id: str) -> str:
    """Return ``sample_id`` if it is a safe file name stem, else raise an error."""
    sample_id = str(sample_id)
    if not _ID_OK.match(sample_id) or len(sample_id) > 200:
        msg = (
            f"sample id {sample_id!r} is not a plain name; use letters, digits, '.', "
            "'_' "
            "or '-' (it becomes the file names wsis/<id>.tif, st/<id>.h5ad)"
        )
        raise BadInputError(msg)
    return sample_id


def is_hest_dir(path: Path) -> bool:
    """True when ``path`` has the ``st/`` and ``wsis/`` folders of the HEST layout."""
    return (path / "st").is_dir() and (path / "wsis").is_dir()


def hest_ids(root: str | Path) -> list[str]:
    """Return the sample ids of a HEST folder (the ``st/*.h5ad`` stems), sorted."""
    return sorted(p.name[: -len(".h5ad")] for p in Path(root, "st").glob("*.h5ad"))


def _resolve(path: str | Path, sample_id: str | None) -> tuple[Path, str]:
    """Return ``(root, id)`` for a HEST root or a file inside one."""
    path = Path(path)
    if path.is_file() and path.parent.name in ("st", "wsis", "metadata"):
        stem = path.name.split(".")[0] if path.parent.name == "wsis" else path.stem
        return _resolve(path.parent.parent, sample_id or stem)
    if not path.is_dir() or not is_hest_dir(path):
        msg = (
            f"{path} is not a HEST sample folder (wsis/<id>.tif, st/<id>.h5ad, "
            "metadata/<id>.json); create one with `napari-seal import`"
        )
        raise BadInputError(msg)
    ids = hest_ids(path)
    if not ids:
        msg = f"{path / 'st'} holds no .h5ad; the HEST folder is incomplete"
        raise SpatialDataError(msg)
    if sample_id is None:
        if len(ids) > 1:
            shown = ", ".join(ids[:20]) + (" ..." if len(ids) > 20 else "")
            msg = f"{path} holds {len(ids)} samples; choose one with --id ({shown})"
            raise BadInputError(msg)
        sample_id = ids[0]
    check_sample_id(sample_id)
    if sample_id not in ids:
        msg = f"sample {sample_id!r} is not in {path}; available: {', '.join(ids[:20])}"
        raise BadInputError(msg)
    return path, sample_id


def _wsi_path(root: Path, sample_id: str) -> Path:
    for suffix in WSI_SUFFIXES:
        cand = root / "wsis" / f"{sample_id}{suffix}"
        if cand.is_file():
            return cand
    msg = f"no slide wsis/{sample_id}.tif in {root}; the HEST folder is incomplete"
    raise SpatialDataError(msg)


def _read_meta(root: Path, sample_id: str) -> dict[str, Any]:
    path = root / "metadata" / f"{sample_id}.json"
    if not path.is_file():
        log.info("no metadata/%s.json in %s", sample_id, root)
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        msg = f"cannot parse {path}: {err}; fix or remove the metadata file"
        raise SpatialDataError(msg) from err
    if not isinstance(meta, dict):
        msg = f"{path} is not a JSON object; fix or remove the metadata file"
        raise SpatialDataError(msg)
    return meta


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def mpp_from_metadata(meta: dict[str, Any]) -> tuple[float | None, str]:
    """Pixel size stated by a HEST metadata dict and its source.

    Our own ``napari_seal`` block first, then ``pixel_size_um_embedded`` (the slide's
    metadata) and ``pixel_size_um_estimated``.

    Examples
    --------
    >>> mpp_from_metadata({"pixel_size_um_estimated": 0.5})
    (0.5, 'estimated')
    """
    ours = meta.get("napari_seal")
    if isinstance(ours, dict) and _positive(ours.get("mpp")):
        return _positive(ours["mpp"]), str(ours.get("mpp_source", "metadata"))
    if _positive(meta.get("pixel_size_um_embedded")):
        return _positive(meta["pixel_size_um_embedded"]), "metadata"
    if _positive(meta.get("pixel_size_um_estimated")):
        return _positive(meta["pixel_size_um_estimated"]), "estimated"
    return None, "unknown"


def _read_h5ad(path: Path) -> AnnData:
    import anndata as ad

    try:
        return ad.read_h5ad(path)
    except READ_ERRORS as err:
        msg = (
            f"cannot read {path}: {' '.join(str(err).split())[:200]}; the file is "
            "truncated or corrupt"
        )
        raise SpatialDataError(msg) from err


def _technology_defaults(
    meta: dict[str, Any],
) -> tuple[str | None, float | None, float | None]:
    from napari_seal.io.st.grid import technology

    name = meta.get("st_technology")
    spot = _positive(meta.get("spot_diameter"))
    dist = _positive(meta.get("inter_spot_dist"))
    if name:
        try:
            tech = technology(str(name))
        except SpatialDataError:
            tech = None
        if tech is not None:
            spot = spot or tech.spot_diameter_um
            dist = dist or tech.pitch_um
    return (str(name) if name else None), spot, dist


def read_hest_st(root: str | Path, *, sample_id: str | None = None) -> StData:
    """Read a sample of a HEST-1k folder as :class:`~napari_seal.io.st.contract.StData`.

    Parameters
    ----------
    root
        The folder with ``wsis/``, ``st/`` and ``metadata/``.
    sample_id
        Which sample, when the folder holds several.

    Returns
    -------
    StData
        With ``mpp`` from the metadata when it states one.
    """
    root, sample_id = _resolve(root, sample_id)
    meta = _read_meta(root, sample_id)
    src = _read_h5ad(root / "st" / f"{sample_id}.h5ad")
    if "spatial" not in src.obsm or np.asarray(src.obsm["spatial"]).ndim != 2:
        validate_st(src, where=f"st/{sample_id}.h5ad")
    obs = src.obs.copy()
    for col in list(obs.columns):
        if obs[col].dtype.kind == "O" or str(obs[col].dtype) == "category":
            obs[col] = obs[col].astype(str)
    adata = build_adata(
        src.X,
        obs_names=src.obs_names,
        var=src.var.copy(),
        spatial_xy=np.asarray(src.obsm["spatial"])[:, :2],
        obs=obs,
        where=f"st/{sample_id}.h5ad",
    )
    tech, spot, dist = _technology_defaults(meta)
    mpp, source = mpp_from_metadata(meta)
    grid_array = None
    if {"array_row", "array_col"} <= set(adata.obs.columns):
        grid_array = adata.obs[["array_col", "array_row"]].to_numpy(np.float64)
    wsi = _wsi_path(root, sample_id)
    return StData(
        adata=adata,
        st_technology=tech,
        spot_diameter_um=spot,
        inter_spot_dist_um=dist,
        image=wsi,
        sample_id=sample_id,
        mpp=mpp,
        mpp_source=source,
        grid_xy=adata.obsm["spatial"].copy(),
        grid_array_xy=grid_array,
        sources={"hest": str(root.resolve()), "image": str(wsi.resolve())},
        metadata={k: v for k, v in meta.items() if k != "napari_seal"},
    )


def load_sample(
    path: str | Path,
    *,
    mpp: float | None = None,
    sample_id: str | None = None,
) -> SpatialSample:
    """Load a HEST-layout folder as a :class:`~napari_seal.io.sample.SpatialSample`.

    Parameters
    ----------
    path
        A HEST folder (``wsis/``, ``st/``, ``metadata/``) or a file inside one. A Space
        Ranger folder or an ``.h5ad`` with an image reference is read in memory.
    mpp
        Pixel size override in micrometres per level-0 pixel (``mpp_source="user"``).
    sample_id
        Which sample, when the folder holds several.

    Returns
    -------
    SpatialSample
        Pixel size from ``mpp``, else the metadata JSON, else the slide's metadata,
        else estimated from the spot grid.

    Examples
    --------
    >>> s = load_sample(bundled_sample_path())
    >>> s.name, s.n_spots, round(s.mpp, 2)
    ('her2st_C2', 187, 0.69)
    """
    p = Path(path)
    if not (p.is_dir() and is_hest_dir(p)) and not (
        p.is_file() and p.parent.name in ("st", "wsis", "metadata")
    ):
        from napari_seal.io.sniff import sniff

        kind = sniff(p)
        if kind == "visium":
            return sample_from_st(read_spaceranger(p), mpp=mpp)
        if kind == "h5ad":
            return sample_from_st(read_h5ad_st(p), mpp=mpp)
    return sample_from_st(read_hest_st(p, sample_id=sample_id), mpp=mpp)


def bundled_sample_path() -> Path:
    """Return the folder of the bundled her2st section C2 (HEST layout).

    Real data: Andersson et al. 2021, Nat Commun 12:6012, CC BY 4.0 (see its SOURCE.md).

    Examples
    --------
    >>> (bundled_sample_path() / "st" / "her2st_C2.h5ad").is_file()
    True
    """
    from importlib.resources import files

    path = Path(str(files("napari_seal") / "data" / BUNDLED))
    if not is_hest_dir(path):
        msg = f"the bundled sample is missing at {path}; reinstall napari-seal"
        raise BadInputError(msg)
    return path


def _check_out(out: Path) -> None:
    from napari_seal.io.atomic import checked_output_path

    out = checked_output_path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        msg = (
            f"{out} already exists and is not an empty folder; choose a new --out or "
            "remove it"
        )
        raise OutputPathError(msg)


def write_hest_sample(
    out: str | Path,
    *,
    sample_id: str,
    adata: AnnData,
    image: Any,
    mpp: float,
    metadata: dict[str, Any],
    jpeg_quality: int = 90,
    on_stage: Callable[[str], None] | None = None,
) -> Path:
    """Write one sample in the HEST layout, atomically (temporary folder, then rename).

    Parameters
    ----------
    out
        The sample folder; must not exist or be empty.
    sample_id
        File name stem of the three files.
    adata
        Spots x genes (written gzip-compressed).
    image
        A :class:`~napari_seal.io.slide.core.Slide` or array, written as a pyramidal
        JPEG TIFF.
    mpp
        Pixel size embedded in the TIFF.
    metadata
        The JSON written to ``metadata/<id>.json``.
    jpeg_quality
        JPEG quality of the TIFF tiles.
    on_stage
        Called with ``"image"``, ``"st"``, ``"metadata"`` before each part.

    Returns
    -------
    Path
        ``out``. On any failure nothing is left behind (``out`` keeps its old state).
    """
    from napari_seal.io.atomic import (
        _umask,
        ensure_writable_dir,
        remove_stale_temporaries,
        temporary_prefix,
    )

    try:  # the contract's name (docs/architecture.md); the code lives in tiff_writer
        from napari_seal.io.slide.writer import write_pyramidal_tiff
    except ImportError:
        from napari_seal.io.slide.writer import write_pyramidal_tiff

    out = Path(out)
    sample_id = check_sample_id(sample_id)
    _check_out(out)
    ensure_writable_dir(out.parent)
    remove_stale_temporaries(out.parent, name=out.name)  # a killed import's
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(out.name), dir=out.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; a sample is shared
        for sub in ("wsis", "st", "metadata"):
            (tmp / sub).mkdir()
        if on_stage:
            on_stage("image")
        write_pyramidal_tiff(
            tmp / "wsis" / f"{sample_id}.tif", image, mpp=mpp, quality=jpeg_quality
        )
        if on_stage:
            on_stage("st")
        adata.write_h5ad(tmp / "st" / f"{sample_id}.h5ad", compression="gzip")
        if on_stage:
            on_stage("metadata")
        text = json.dumps(metadata, indent=2, default=_json_default) + "\n"
        (tmp / "metadata" / f"{sample_id}.json").write_text(text, encoding="utf-8")
        _check_out(out)
        if out.exists():
            out.rmdir()
        tmp.replace(out)
    except BaseException as err:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        if isinstance(err, OSError) and not isinstance(err, SealError):
            msg = (
                f"cannot write {out}: {err.strerror or err}; free disk space or choose "
                "another --out"
            )
            raise OutputPathError(msg) from err
        raise
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
