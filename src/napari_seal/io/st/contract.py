"""Spatial-transcriptomics data contract (``validate_st``), shared table helpers and
the reader dispatch (``read_st``).

Every reader returns an :class:`StData`: an AnnData whose ``obsm["spatial"]`` holds the
spot centres as ``(x, y)`` pixels of :attr:`StData.image` (level 0), raw counts in
``X`` (CSR float32), spot ids as ``obs_names`` (legacy ST keeps ``"XxY"``) and
``obs["array_row"]`` / ``obs["array_col"]`` when known, plus the geometry needed to
estimate the pixel size. :func:`napari_seal.io.convert.import_sample` turns it into a
HEST-layout sample folder.

Readers: legacy ST tables (``io.st_legacy.read_legacy_st``), Space Ranger output and
AnnData ``.h5ad`` (``io.st_visium.read_spaceranger`` / ``read_h5ad_st``) and HEST-1k
samples (``io.hest.read_hest_st``).
"""

from __future__ import annotations

import gzip
import logging
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_seal.errors import BadInputError, SpatialDataError

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

__all__ = [
    "KINDS",
    "StData",
    "build_adata",
    "read_table",
    "require_file",
    "file_stem",
    "validate_st",
    "warn_dropped",
]

log = logging.getLogger(__name__)

KINDS = ("visium", "legacy-st", "h5ad", "hest")
# errors a damaged or foreign file raises inside pandas / gzip / h5py
READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    zlib.error,
)


@dataclass
class StData:
    """Spots, counts and geometry read from one ST source.

    Parameters
    ----------
    adata
        Spots x genes; ``obsm["spatial"]`` in pixels of ``image``.
    st_technology
        HEST technology name (``"Spatial Transcriptomics"``, ``"Visium"``) or ``None``.
    spot_diameter_um, inter_spot_dist_um
        Spot geometry in micrometres (``None`` when unknown).
    image
        The image the coordinates refer to (``None`` when not given).
    image_scale
        Factor applied to the source's full-resolution coordinates (1.0, or a Space
        Ranger ``tissue_hires_scalef`` when only the hires image exists).
    mpp, mpp_source
        Pixel size of ``image`` stated by the source itself (HEST metadata), if any.
    grid_xy, grid_array_xy
        Pixel centres and array positions (column-like first) of every spot on the
        array, for the pixel-size fit (may include spots outside the tissue).
    sample_id
        Default sample id.
    sources
        Input files, by role.
    metadata
        Extra key/values carried into the sample's metadata JSON.
    """

    adata: AnnData
    st_technology: str | None
    spot_diameter_um: float | None
    inter_spot_dist_um: float | None
    image: Path | None
    sample_id: str
    image_scale: float = 1.0
    mpp: float | None = None
    mpp_source: str = "unknown"
    grid_xy: np.ndarray | None = None
    grid_array_xy: np.ndarray | None = None
    sources: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def warn_dropped(message: str) -> None:
    """Report spots dropped by an inner join (``warnings.warn`` and the log)."""
    log.info(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def require_file(path: str | Path | None, *, role: str, flag: str) -> Path:
    if path is None:
        msg = f"no {role} given; pass it with {flag} FILE"
        raise BadInputError(msg)
    path = Path(path)
    if not path.is_file():
        msg = (
            f"{role} {path} does not exist or is not a file; check the path given to "
            f"{flag}"
        )
        raise BadInputError(msg)
    return path


def _sniff_sep(path: Path) -> str:
    with path.open("rb") as raw:
        head = raw.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else Path.open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            line = fh.readline()
    except READ_ERRORS as err:
        msg = f"cannot read {path}: {err}; the file is truncated or not a text table"
        raise SpatialDataError(msg) from err
    return "\t" if line.count("\t") >= line.count(",") else ","


def read_table(
    path: str | Path, *, role: str, index_col: int | None = None
) -> pd.DataFrame:
    """Read a tab- or comma-separated table (optionally gzipped) read-only.

    Parameters
    ----------
    path
        ``.tsv``/``.csv`` file, optionally ``.gz``; the separator is sniffed.
    role
        What the table is, for error messages (``"counts table"``).
    index_col
        Column to use as the row index.

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    path = Path(path)
    sep = _sniff_sep(path)
    try:
        df = pd.read_csv(path, sep=sep, index_col=index_col, compression="infer")
    except READ_ERRORS as err:
        msg = (
            f"cannot read the {role} {path}: {' '.join(str(err).split())[:200]}; the "
            "file "
            "is truncated, corrupt or not a tab/comma-separated table"
        )
        raise SpatialDataError(msg) from err
    if df.shape[0] == 0 or df.shape[1] == 0:
        msg = (
            f"the {role} {path} has {df.shape[0]} rows and {df.shape[1]} columns; give "
            "a table with one row per spot (and one column per gene for counts)"
        )
        raise SpatialDataError(msg)
    return df


def _as_counts_matrix(values: np.ndarray, *, where: str, warn_non_integer: bool = True):
    """Check counts (finite, non-negative) and return CSR float32."""
    import scipy.sparse as sp

    dense = None if sp.issparse(values) else np.asarray(values)
    dtype = values.dtype if dense is None else dense.dtype
    if dtype.kind not in "biuf":
        msg = (
            f"the counts in {where} are of type {dtype}, not numbers; store raw counts "
            "as integers or floats"
        )
        raise SpatialDataError(msg)
    if dense is not None and dtype.kind == "f" and dtype.itemsize < 4:
        dense = dense.astype(np.float32)  # float16: scipy.sparse refuses it
    mat = values.tocsr() if dense is None else sp.csr_matrix(dense)
    data = np.asarray(mat.data, dtype=np.float64)
    if data.size and not np.isfinite(data).all():
        n_bad = int((~np.isfinite(data)).sum())
        msg = (
            f"{n_bad} counts in {where} are NaN or infinite; counts must be finite "
            "non-negative numbers (fill empty cells with 0)"
        )
        raise SpatialDataError(msg)
    if data.size and (data < 0).any():
        n_bad = int((data < 0).sum())
        msg = (
            f"{n_bad} counts in {where} are negative; import raw (non-negative) "
            "counts, "
            "not scaled or log-normalised values"
        )
        raise SpatialDataError(msg)
    if data.size and data.max() > np.finfo(np.float32).max:
        msg = (
            f"counts in {where} reach {data.max():.3g}, beyond float32; raw counts are "
            "integers: import the raw count matrix, not scaled values"
        )
        raise SpatialDataError(msg)
    if warn_non_integer and data.size and not np.array_equal(data, np.round(data)):
        msg = (
            f"the counts in {where} are not integers (normalised data?); they are kept "
            "as given, but SEAL expects raw counts"
        )
        log.info(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)
    out = mat.astype(np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def build_adata(
    counts, *, obs_names, var, spatial_xy, obs=None, where: str = "the counts table"
) -> AnnData:
    """Assemble the canonical AnnData (CSR float32 counts, float64 ``obsm["spatial"]``).

    Parameters
    ----------
    counts
        ``(n_spots, n_genes)`` raw counts (dense or sparse).
    obs_names
        Spot ids.
    var
        DataFrame indexed by gene name.
    spatial_xy
        ``(n_spots, 2)`` level-0 ``(x, y)`` pixels.
    obs
        Optional per-spot columns (e.g. ``array_row``, ``array_col``).
    where
        Name of the counts' source for messages.

    Returns
    -------
    anndata.AnnData
    """
    import anndata as ad
    import pandas as pd

    x = _as_counts_matrix(counts, where=where)
    obs_df = pd.DataFrame(index=pd.Index([str(s) for s in obs_names], name=None))
    if obs is not None:
        for col in obs.columns:
            values = obs[col]
            if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object:
                values = values.astype(str)  # mixed objects cannot be written to h5ad
            obs_df[str(col)] = np.asarray(values)
    var = var.copy()
    var.index = var.index.astype(str)
    with warnings.catch_warnings():  # duplicated gene names: handled just below
        warnings.filterwarnings("ignore", "Variable names are not unique")
        adata = ad.AnnData(X=x, obs=obs_df, var=var)
    if not adata.var_names.is_unique:  # as scanpy's readers do; every gene is kept
        dup = adata.var_names[adata.var_names.duplicated()].unique()
        warn_dropped(
            f"{len(dup)} gene name(s) in {where} appear more than once (e.g. "
            f"{str(dup[0])!r}); renamed the repeats GENE-1, GENE-2... (all kept)"
        )
        adata.var_names_make_unique()
    adata.obsm["spatial"] = np.asarray(spatial_xy, dtype=np.float64)
    return adata


def validate_st(
    adata: AnnData,
    *,
    image_size: tuple[int, int] | None = None,
    where: str = "the ST data",
) -> None:
    """Check the ST data contract; raise a fix-it :class:`SpatialDataError` if broken.

    Checks ``obsm["spatial"]`` (present, ``(n, 2)``, finite), unique spot ids, at least
    one spot and gene, finite non-negative counts and, when ``image_size`` is given,
    that every spot centre lies inside the ``(width_px, height_px)`` image.

    Parameters
    ----------
    adata
        Spots x genes.
    image_size
        ``(width_px, height_px)`` of the level-0 image the coordinates refer to.
    where
        Name of the source for messages.

    Examples
    --------
    >>> import anndata as ad
    >>> a = ad.AnnData(np.ones((2, 3), np.float32))
    >>> a.obsm["spatial"] = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> validate_st(a, image_size=(10, 10))
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = (
            f"{where} has {adata.n_obs} spots and {adata.n_vars} genes; nothing to "
            "import"
        )
        raise SpatialDataError(msg)
    if "spatial" not in adata.obsm:
        msg = (
            f"obsm['spatial'] is missing in {where}; expected (n_spots, 2) level-0 "
            "pixel "
            "coordinates (x, y) of the spot centres; set adata.obsm['spatial'] = xy "
            "and save again"
        )
        raise SpatialDataError(msg)
    xy = np.asarray(adata.obsm["spatial"])
    if xy.ndim != 2 or xy.shape[1] < 2 or xy.shape[0] != adata.n_obs:
        msg = (
            f"obsm['spatial'] in {where} has shape {xy.shape}; expected "
            f"({adata.n_obs}, 2) "
            "level-0 pixel coordinates (x, y)"
        )
        raise SpatialDataError(msg)
    try:
        xy = xy[:, :2].astype(np.float64)
    except (TypeError, ValueError) as err:
        msg = (
            f"obsm['spatial'] in {where} is not numeric; store (x, y) pixel coordinates"
        )
        raise SpatialDataError(msg) from err
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        first = str(adata.obs_names[int(np.argmax(bad))])
        msg = (
            f"{int(bad.sum())} spot(s) in {where} have NaN or infinite coordinates "
            f"(first: {first!r}); remove those spots or fix their pixel positions"
        )
        raise SpatialDataError(msg)
    names = adata.obs_names
    if not names.is_unique:
        dup = names[names.duplicated()].unique()
        msg = (
            f"{len(dup)} duplicate spot id(s) in {where} (e.g. {str(dup[0])!r}); each "
            "spot "
            "needs a unique id: remove the duplicated rows"
        )
        raise SpatialDataError(msg)
    _as_counts_matrix(adata.X, where=where, warn_non_integer=False)
    if image_size is not None:
        w, h = image_size
        out = (xy[:, 0] < 0) | (xy[:, 1] < 0) | (xy[:, 0] > w) | (xy[:, 1] > h)
        if out.any():
            i = int(np.argmax(out))
            msg = (
                f"{int(out.sum())} of {len(xy)} spot centres in {where} lie outside "
                "the "
                f"{w} x {h} px image (e.g. {str(names[i])!r} at x={xy[i, 0]:.0f}, "
                f"y={xy[i, 1]:.0f}); give the full-resolution image the coordinates "
                "refer to"
            )
            raise SpatialDataError(msg)


def file_stem(path: Path) -> str:
    name = path.name
    for ext in (".gz", ".bz2", ".xz", ".zip", ".tsv", ".csv", ".txt", ".h5ad"):
        name = name.removesuffix(ext)
    return name or path.stem
