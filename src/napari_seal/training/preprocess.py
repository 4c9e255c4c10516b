"""Expression preprocessing for SEAL and the fixed, ordered global gene panel.

Per sample (``reference/seal_method.md`` 4.2, with the documented deviations of
``docs/training.md``):

1. gene names upper-cased; duplicates and control probes (``BLANK``, ``CONTROL``,
   ``AMBIGUOUS``, ``NEGCONTROL``...) dropped;
2. neighbour smoothing of the RAW counts: ``0.5 * x + 0.5 * mean(x_j)`` over the spots
   ``j`` whose centres lie within ``smooth_radius * inter_spot_dist_um / mpp`` pixels,
   the spot itself included in the mean;
3. ``normalize_total(1e4)`` then ``log1p`` (spots with no counts stay 0).

:func:`build_panel` concatenates the training samples and selects the panel once:
the ``n_hvg`` most variable genes (scanpy ``seurat`` flavour on the unsmoothed
log-normalised data, genes present in every training sample with >= 3 counts in all),
ranked by normalised dispersion, then the default pathology markers present in the
data, then the user's ``include_genes``. :class:`GenePanel` carries the z-score
statistics of the training spots and is saved with the run.
"""

from __future__ import annotations

import difflib
import json
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from napari_seal.errors import BadInputError, GeneQueryError, SpatialDataError
from napari_seal.training.expression import (
    DEFAULT_MARKERS,
    Preprocessed,
    parse_gene_list,
    preprocess_sample,
)

if TYPE_CHECKING:
    from napari_seal.io.sample import SpatialSample

__all__ = [
    "GenePanel",
    "build_panel",
]

log = logging.getLogger(__name__)


@dataclass
class GenePanel:
    """A fixed, ordered gene panel with training-set z-score statistics.

    Attributes
    ----------
    genes
        Upper-case gene names, in model order.
    mean, std
        ``(G,)`` float32 per-gene mean and std of the training spots' log-normalised
        (smoothed) expression; a gene constant in training gets std 1.
    sources
        Why each gene is in the panel: ``"hvg"``, ``"marker"`` or ``"include"``.
    preprocessing
        How expression must be prepared to match (smoothing, target sum).
    """

    genes: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    sources: tuple[str, ...] = ()
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.genes = tuple(str(g) for g in self.genes)
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.std = np.asarray(self.std, dtype=np.float32)
        if not self.sources:
            self.sources = ("hvg",) * len(self.genes)
        self.sources = tuple(self.sources)
        if not (
            len(self.genes) == self.mean.size == self.std.size == len(self.sources)
        ):
            msg = "GenePanel genes, mean, std and sources must have the same length"
            raise ValueError(msg)

    def __len__(self) -> int:
        return len(self.genes)

    def index(self, genes: str | Sequence[str]) -> np.ndarray:
        """Positions of ``genes`` (case-insensitive) in the panel.

        Raises
        ------
        GeneQueryError
            Naming the unknown genes with near-miss suggestions.
        """
        if isinstance(genes, str):
            genes = [genes]
        lookup = {g: i for i, g in enumerate(self.genes)}
        out, missing = [], []
        for g in genes:
            i = lookup.get(str(g).strip().upper())
            (missing.append(g) if i is None else out.append(i))
        if missing:
            raise GeneQueryError(
                _unknown_genes_message(missing, self.genes, "the panel")
            )
        return np.asarray(out, dtype=np.int64)

    def with_stats(self, expr: np.ndarray) -> GenePanel:
        """Return a copy whose z-score statistics come from ``expr`` (spots x panel)."""
        expr = np.asarray(expr, dtype=np.float64)
        std = expr.std(axis=0)
        std = np.where(std < 1e-6, 1.0, std)
        return GenePanel(
            self.genes, expr.mean(axis=0), std, self.sources, dict(self.preprocessing)
        )

    def expression(
        self, data: SpatialSample | Preprocessed, *, max_missing_fraction: float = 0.5
    ) -> np.ndarray:
        """Panel-ordered ``(n_spots, G)`` float32 log-normalised smoothed expression.

        Panel genes the sample lacks are filled with 0 (not expressed), with a warning
        giving the count; a sample missing more than ``max_missing_fraction`` of the
        panel is rejected.
        """
        prep = (
            data
            if isinstance(data, Preprocessed)
            else preprocess_sample(data, **self._prep_kwargs())
        )
        pos = {g: i for i, g in enumerate(prep.genes)}
        idx = np.array([pos.get(g, -1) for g in self.genes], dtype=np.int64)
        missing = int((idx < 0).sum())
        if missing > max_missing_fraction * len(self.genes):
            msg = (
                f"sample {prep.name!r} lacks {missing} of the {len(self.genes)} panel "
                f"genes (more than {max_missing_fraction:.0%}); it was measured on "
                "another gene set: train a run on comparable samples"
            )
            raise SpatialDataError(msg)
        if missing:
            warnings.warn(
                f"sample {prep.name!r} lacks {missing} of the {len(self.genes)} panel "
                "genes; they are filled with 0 (not expressed)",
                UserWarning,
                stacklevel=2,
            )
        present = idx >= 0
        out = np.zeros((prep.n_spots, len(self.genes)), dtype=np.float32)
        out[:, present] = prep.log_smoothed[:, idx[present]].toarray()
        return out

    def zscore(self, expr: np.ndarray) -> np.ndarray:
        """Z-score panel-space expression with the training statistics."""
        return (np.asarray(expr, dtype=np.float32) - self.mean) / self.std

    def _prep_kwargs(self) -> dict[str, Any]:
        p = self.preprocessing
        return {
            "smooth": bool(p.get("smooth", True)),
            "smooth_radius": float(p.get("smooth_radius", 1.5)),
            "target_sum": float(p.get("target_sum", 1e4)),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (float32 values round-trip exactly through JSON)."""
        return {
            "genes": list(self.genes),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "sources": list(self.sources),
            "preprocessing": dict(self.preprocessing),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenePanel:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(data["genes"]),
            np.asarray(data["mean"], np.float32),
            np.asarray(data["std"], np.float32),
            tuple(data.get("sources", ())),
            dict(data.get("preprocessing", {})),
        )

    def save(self, path: str | Path) -> Path:
        """Write ``panel.json`` atomically."""
        from napari_seal.io.atomic import atomic_write_text

        return atomic_write_text(
            Path(path), json.dumps(self.to_dict(), indent=1) + "\n"
        )

    @classmethod
    def load(cls, path: str | Path) -> GenePanel:
        """Read a panel written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _unknown_genes_message(
    missing: Sequence[str], universe: Sequence[str], where: str
) -> str:
    pool = list(universe)
    parts = []
    for g in missing:
        close = difflib.get_close_matches(str(g).upper(), pool, n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        parts.append(f"{g}{hint}")
    return (
        f"gene(s) not found in {where}: {'; '.join(parts)}. Check the spelling "
        "(HGNC symbols) or drop them from --include-genes / the query"
    )


def _hvg_ranked(preps: Sequence[Preprocessed], n_hvg: int) -> list[str]:
    import anndata as ad
    import scanpy as sc

    common = set(preps[0].genes)
    for p in preps[1:]:
        common &= set(p.genes)
    totals: dict[str, float] = {}
    for p in preps:
        for g, t in zip(p.genes, p.raw_gene_totals, strict=True):
            if g in common:
                totals[g] = totals.get(g, 0.0) + float(t)
    cand = sorted(g for g in common if totals[g] >= 3)
    if not cand:
        msg = "the training samples share no expressed genes; check their gene names"
        raise SpatialDataError(msg)
    mats = []
    for p in preps:
        pos = {g: i for i, g in enumerate(p.genes)}
        mats.append(p.log_plain[:, [pos[g] for g in cand]])
    adata = ad.AnnData(sp.vstack(mats).tocsr())
    adata.var_names = cand
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.highly_variable_genes(
            adata, flavor="seurat", n_top_genes=min(n_hvg, len(cand))
        )
    var = adata.var
    disp = var["dispersions_norm"].to_numpy(dtype=np.float64)
    disp = np.where(np.isfinite(disp), disp, -np.inf)
    order = sorted(range(len(cand)), key=lambda i: (-disp[i], cand[i]))
    if n_hvg > len(cand):
        log.warning(
            "only %d genes are eligible as HVGs (asked for %d)", len(cand), n_hvg
        )
    return [cand[i] for i in order[:n_hvg]]


def build_panel(
    samples: Sequence[SpatialSample | Preprocessed],
    *,
    n_hvg: int = 2000,
    include_genes: Iterable[str] | str | None = (),
    markers: Sequence[str] | None = DEFAULT_MARKERS,
    smooth: bool = True,
    smooth_radius: float = 1.5,
) -> GenePanel:
    """Select the global panel on the concatenated training samples.

    Parameters
    ----------
    samples
        Training samples (or their :func:`preprocess_sample` output).
    n_hvg
        Number of highly variable genes (seurat flavour, ranked by dispersion).
    include_genes
        Genes that must be in the panel (names, ``"G1,G2"`` or a file); a name found
        in no training sample raises :class:`~napari_seal.errors.GeneQueryError`.
    markers
        Marker genes added when present in at least one sample (``None``: none).
    smooth, smooth_radius
        Preprocessing of samples given as :class:`SpatialSample`.

    Returns
    -------
    The panel: HVGs, then markers, then include genes (each once), with z-score
    statistics over every spot of ``samples``.
    """
    if not samples:
        msg = "no training samples were given; pass one or more HEST sample folders"
        raise BadInputError(msg)
    preps = [
        s
        if isinstance(s, Preprocessed)
        else preprocess_sample(s, smooth=smooth, smooth_radius=smooth_radius)
        for s in samples
    ]
    include = [g.upper() for g in parse_gene_list(include_genes)]
    universe = set().union(*(set(p.genes) for p in preps))
    unknown = [g for g in include if g not in universe]
    if unknown:
        raise GeneQueryError(
            _unknown_genes_message(unknown, sorted(universe), "any training sample")
        )
    genes = _hvg_ranked(preps, n_hvg)
    sources = ["hvg"] * len(genes)
    seen = set(genes)
    for g in markers or ():
        if g.upper() in universe and g.upper() not in seen:
            genes.append(g.upper())
            sources.append("marker")
            seen.add(g.upper())
    for g in include:
        if g not in seen:
            genes.append(g)
            sources.append("include")
            seen.add(g)
        elif g in seen:
            sources[genes.index(g)] = "include"
    prep_info = {
        "smooth": bool(smooth),
        "smooth_radius": float(smooth_radius),
        "target_sum": 1e4,
        "log1p": True,
    }
    panel = GenePanel(
        tuple(genes),
        np.zeros(len(genes)),
        np.ones(len(genes)),
        tuple(sources),
        prep_info,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expr = np.concatenate(
            [panel.expression(p, max_missing_fraction=1.0) for p in preps]
        )
    return panel.with_stats(expr)
