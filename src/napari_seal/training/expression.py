"""Per-sample expression preprocessing for SEAL (smoothing, normalisation, gene names).

Per sample (``reference/seal_method.md`` 4.2, with the documented deviations of
``docs/training.md``):

1. gene names upper-cased; duplicates and control probes (``BLANK``, ``CONTROL``,
   ``AMBIGUOUS``, ``NEGCONTROL``...) dropped;
2. neighbour smoothing of the RAW counts: ``0.5 * x + 0.5 * mean(x_j)`` over the spots
   ``j`` whose centres lie within ``smooth_radius * inter_spot_dist_um / mpp`` pixels,
   the spot itself included in the mean;
3. ``normalize_total(1e4)`` then ``log1p`` (spots with no counts stay 0).

The global panel built from these is in :mod:`napari_seal.training.preprocess`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from napari_seal.errors import BadInputError, SpatialDataError

if TYPE_CHECKING:
    from napari_seal.io.sample import SpatialSample

__all__ = [
    "DEFAULT_MARKERS",
    "Preprocessed",
    "normalize_log1p",
    "parse_gene_list",
    "preprocess_sample",
    "smooth_counts",
]

log = logging.getLogger(__name__)

#: Common pathology markers added to every panel when the data has them (DESIGN 4):
#: breast/epithelial, proliferation, immune, stroma/vessels, and a few other organs'
#: lineage markers, so users can query them even when they are not highly variable.
# fmt: off
DEFAULT_MARKERS: tuple[str, ...] = (
    "ERBB2", "GRB7", "ESR1", "PGR", "AR", "FOXA1", "GATA3", "TFF1", "SCGB2A2",
    "KRT19", "KRT8", "KRT18", "KRT5", "KRT14", "EPCAM", "CDH1", "MUC1", "MKI67",
    "TOP2A", "PCNA", "PTPRC", "CD3E", "CD4", "CD8A", "MS4A1", "CD79A", "CD74", "CD68",
    "CD163", "LYZ", "FOXP3", "IGKC", "COL1A1", "COL3A1", "ACTA2", "VIM", "FN1",
    "SPARC", "PECAM1", "VWF", "CDX2", "ALB", "NKX2-1", "SFTPC", "KLK3",
)
# fmt: on

_CONTROL_RE = re.compile(r"BLANK|CONTROL|AMBIGUOUS|UNASSIGNED|DEPRECATED", re.I)


def parse_gene_list(value: str | Path | Iterable[str] | None) -> tuple[str, ...]:
    """Parse ``"G1,G2"``, a text file of names (comma, space or newline separated), or
    a list.

    Raises
    ------
    BadInputError
        When ``value`` looks like a file path that does not exist.
    """
    if value is None:
        return ()
    if isinstance(value, Path) or (
        isinstance(value, str)
        and (
            Path(value).is_file()
            or value.endswith((".txt", ".csv", ".tsv"))
            or "/" in value
        )
    ):
        path = Path(value)
        if not path.is_file():
            msg = (
                f"gene list file {path} does not exist; pass genes as G1,G2 or "
                "an existing text file with one gene per line"
            )
            raise BadInputError(msg)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            msg = (
                f"cannot read the gene list file {path} ({err}); pass a UTF-8 text "
                "file with one gene per line, or genes as G1,G2"
            )
            raise BadInputError(msg) from err
        items: Iterable[str] = re.split(r"[,\s;]+", text)
    elif isinstance(value, str):
        items = value.split(",")
    else:
        items = value
    out: list[str] = []
    for g in items:
        g = str(g).strip()
        if g and g.upper() not in {o.upper() for o in out}:
            out.append(g)
    return tuple(out)


def smooth_counts(counts: Any, xy_px: np.ndarray, *, radius_px: float) -> sp.csr_matrix:
    """Neighbour-smooth raw counts: ``0.5 * x_i + 0.5 * mean_{j: d_ij <= r} x_j``.

    Parameters
    ----------
    counts
        ``(n_spots, n_genes)`` raw counts (dense or sparse).
    xy_px
        ``(n_spots, 2)`` spot centres in level-0 pixels.
    radius_px
        Neighbourhood radius in pixels; the spot itself is part of its neighbourhood.

    Returns
    -------
    CSR float32 matrix of the same shape.

    Examples
    --------
    >>> x = np.array([[2.0], [4.0], [100.0]])
    >>> xy = np.array([[0.0, 0.0], [10.0, 0.0], [100.0, 0.0]])
    >>> smooth_counts(x, xy, radius_px=15).toarray().ravel().tolist()
    [2.5, 3.5, 100.0]
    """
    from scipy.spatial import cKDTree

    xy = np.asarray(xy_px, dtype=np.float64)
    n = xy.shape[0]
    tree = cKDTree(xy)
    adj = tree.sparse_distance_matrix(
        tree, max_distance=float(radius_px), output_type="coo_matrix"
    )
    rows = np.concatenate([adj.row, np.arange(n)])
    cols = np.concatenate([adj.col, np.arange(n)])
    w = sp.coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)).tocsr()
    w.data[:] = 1.0  # duplicates of the diagonal (distance 0) were summed
    w.sum_duplicates()
    w.data[:] = 1.0
    deg = np.asarray(w.sum(axis=1)).ravel()
    mean_op = sp.diags(1.0 / deg) @ w
    op = 0.5 * sp.identity(n, format="csr") + 0.5 * mean_op
    x = sp.csr_matrix(counts, dtype=np.float64)
    return sp.csr_matrix(op @ x, dtype=np.float32)


def normalize_log1p(counts: Any, *, target_sum: float = 1e4) -> sp.csr_matrix:
    """Scale each spot to ``target_sum`` total counts, then ``log1p`` (CSR float32)."""
    x = sp.csr_matrix(counts, dtype=np.float64)
    totals = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    x = sp.diags(scale) @ x
    x = sp.csr_matrix(x)
    x.data = np.log1p(x.data)
    return sp.csr_matrix(x, dtype=np.float32)


@dataclass
class Preprocessed:
    """One sample's preprocessed expression (all its genes)."""

    name: str
    genes: np.ndarray  # upper-case names, no duplicates or control probes
    log_smoothed: sp.csr_matrix  # encoder input / training target
    log_plain: sp.csr_matrix  # unsmoothed, for HVG selection
    raw_gene_totals: np.ndarray  # raw counts per gene (HVG eligibility)
    spot_totals: np.ndarray  # raw counts per spot

    @property
    def n_spots(self) -> int:
        """Number of spots."""
        return int(self.log_smoothed.shape[0])


def _raw_counts(adata: Any) -> Any:
    if "counts" in getattr(adata, "layers", {}):
        return adata.layers["counts"]
    return adata.X


def preprocess_sample(
    sample: SpatialSample,
    *,
    smooth: bool = True,
    smooth_radius: float = 1.5,
    target_sum: float = 1e4,
) -> Preprocessed:
    """Clean gene names, smooth raw counts, normalise and ``log1p`` one sample.

    Parameters
    ----------
    sample
        The sample; raw counts in ``adata.layers["counts"]`` or ``adata.X``.
    smooth
        Apply neighbour smoothing.
    smooth_radius
        Radius in inter-spot distances (``inter_spot_dist_um / mpp`` pixels each).
    target_sum
        Counts per spot after normalisation.
    """
    adata = sample.adata
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = f"sample {sample.name!r} has no spots or no genes; check its st/*.h5ad"
        raise SpatialDataError(msg)
    names = np.array([str(g).upper() for g in adata.var_names])
    keep = ~np.array([bool(_CONTROL_RE.search(g)) for g in names])
    _, first = np.unique(names, return_index=True)
    unique_mask = np.zeros(names.size, dtype=bool)
    unique_mask[first] = True
    keep &= unique_mask
    counts = sp.csr_matrix(_raw_counts(adata), dtype=np.float32)[
        :, np.flatnonzero(keep)
    ]
    if counts.nnz and counts.data.min() < 0:
        msg = (
            f"sample {sample.name!r} has negative values in its counts; training "
            "needs raw counts in adata.X or adata.layers['counts']"
        )
        raise SpatialDataError(msg)
    genes = names[keep]
    if smooth and smooth_radius > 0:
        radius_px = smooth_radius * float(sample.inter_spot_dist_um) / float(sample.mpp)
        smoothed = smooth_counts(counts, sample.spots_xy, radius_px=radius_px)
    else:
        smoothed = counts
    return Preprocessed(
        name=sample.name,
        genes=genes,
        log_smoothed=normalize_log1p(smoothed, target_sum=target_sum),
        log_plain=normalize_log1p(counts, target_sum=target_sum),
        raw_gene_totals=np.asarray(counts.sum(axis=0)).ravel(),
        spot_totals=np.asarray(counts.sum(axis=1)).ravel(),
    )
