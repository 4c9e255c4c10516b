"""The HEST linear-probe protocol on arrays: targets, gene choice, probe, Pearson.

This module is pure numpy/scipy/scikit-learn (no torch);
:mod:`napari_seal.evaluate.benchmark` adds features (encoders, spot patches), folds and
the JSON report on top of it.

Protocol (HEST-Benchmark, ``reference/seal_method.md`` 5.1), per fold:

1. Targets: ``"hest"`` = ``log1p`` of raw counts (HEST, no library-size
   normalisation); ``"normalized"`` = counts scaled to 1e4 per spot, then ``log1p``.
2. Genes: the 50 most variable genes (variance of the transformed targets, pooled
   over every training spot) among the genes present in every training sample. The
   test samples never take part, so a change in a test sample cannot change the genes.
3. Features: ``StandardScaler`` then ``PCA`` with ``min(256, n_train, D)`` components,
   both fitted on the training spots only.
4. Ridge: ``alpha = 100 / (n_pc * 50)``, ``fit_intercept=False``, solver ``lsqr``,
   ``max_iter=1000``, fitted on the *uncentred* targets, exactly as HEST does. The PCA
   scores of the training spots have zero mean, so the coefficients equal those of a
   centred fit; only the constant offset is absent, which Pearson ignores.
   :meth:`RidgeProbe.predict` adds the training mean back (``offset``) so saved
   heads paint values in target units.
5. Metric: Pearson r per gene on each test sample, averaged over the genes. A gene
   whose prediction or measured target is constant on the test sample has no defined
   r: it scores **0** (not excluded), so every encoder is averaged over the same genes
   and cannot gain by making a gene constant.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from napari_seal.errors import BadInputError

__all__ = [
    "ALPHA_MODES",
    "CV_ALPHA_GRID",
    "N_GENES",
    "N_PC",
    "TARGET_MODES",
    "RidgeProbe",
    "cv_alpha",
    "depth_feature",
    "fit_probe",
    "gene_matrix",
    "hest_alpha",
    "make_targets",
    "pearson_per_gene",
    "raw_counts",
    "select_genes",
]

log = logging.getLogger(__name__)

N_GENES = 50
N_PC = 256
TARGET_MODES = ("hest", "normalized")
ALPHA_MODES = ("hest", "cv")
#: Ridge alphas tried by ``alpha="cv"`` (half-decade steps). The PCA scores of
#: standardised features have variances of order 1..100 over ~1e3 spots, so the grid
#: spans from HEST's near-zero shrinkage to strong shrinkage.
CV_ALPHA_GRID = tuple(float(a) for a in np.logspace(-2, 5, 15))


def hest_alpha(n_pc: int, *, n_genes: int = N_GENES) -> float:
    """Return HEST's ridge penalty ``100 / (n_pc * n_genes)``.

    Examples
    --------
    >>> hest_alpha(256)
    0.0078125
    """
    return 100.0 / (n_pc * n_genes)


def raw_counts(adata: Any) -> np.ndarray | sp.csr_matrix:
    """Return the raw counts of an AnnData (``layers["counts"]`` or else ``X``)."""
    counts = adata.layers.get("counts", adata.X)
    if sp.issparse(counts):
        return sp.csr_matrix(counts, dtype=np.float64)
    return np.asarray(counts, dtype=np.float64)


def make_targets(counts: Any, *, mode: str = "hest") -> np.ndarray | sp.csr_matrix:
    """Transform raw counts into probe targets (sparse stays sparse).

    Parameters
    ----------
    counts
        ``(n_spots, n_genes)`` raw counts, dense or sparse.
    mode
        ``"hest"``: ``log1p(counts)``; ``"normalized"``: each spot scaled to a total
        of 1e4, then ``log1p`` (spots with no counts stay 0).

    Examples
    --------
    >>> make_targets(np.array([[0.0, np.e - 1]]), mode="hest").round(3)
    array([[0., 1.]])
    """
    if mode not in TARGET_MODES:
        msg = f"targets={mode!r} is not a target mode; use one of {TARGET_MODES}"
        raise BadInputError(msg)
    if sp.issparse(counts):
        x = sp.csr_matrix(counts, dtype=np.float64, copy=True)
        if x.nnz and x.data.min() < 0:
            msg = (
                "counts contain negative values; the probe needs raw "
                "(non-negative) counts in X or layers['counts']"
            )
            raise BadInputError(msg)
        if mode == "normalized":
            total = np.asarray(x.sum(axis=1)).ravel()
            scale = np.divide(1e4, total, out=np.zeros_like(total), where=total > 0)
            x = sp.csr_matrix(sp.diags(scale) @ x)
        x.data = np.log1p(x.data)
        return x
    x = np.array(counts, dtype=np.float64)
    if np.any(x < 0):
        msg = (
            "counts contain negative values; the probe needs raw "
            "(non-negative) counts in X or layers['counts']"
        )
        raise BadInputError(msg)
    if mode == "normalized":
        total = x.sum(axis=1, keepdims=True)
        x = np.divide(x * 1e4, total, out=np.zeros_like(x), where=total > 0)
    return np.log1p(x)


def depth_feature(counts: Any) -> np.ndarray:
    """Return the depth oracle feature, ``log1p`` of each spot's total, ``(n, 1)``."""
    total = np.asarray(counts.sum(axis=1), dtype=np.float64).reshape(-1, 1)
    return np.log1p(total)


def _column_variance(
    x: np.ndarray | sp.csr_matrix,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Return per-column sum, sum of squares and row count."""
    if sp.issparse(x):
        s = np.asarray(x.sum(axis=0)).ravel()
        s2 = np.asarray(x.multiply(x).sum(axis=0)).ravel()
    else:
        s = x.sum(axis=0)
        s2 = (x * x).sum(axis=0)
    return s, s2, x.shape[0]


def select_genes(
    targets: Sequence[np.ndarray | sp.csr_matrix],
    gene_names: Sequence[Sequence[str]],
    *,
    n_genes: int = N_GENES,
) -> list[str]:
    """Pick the ``n_genes`` most variable genes of the training spots.

    Parameters
    ----------
    targets
        One transformed target matrix per *training* sample.
    gene_names
        The gene names (columns) of each matrix.
    n_genes
        How many genes (HEST: 50). Fewer are returned, with a warning, when the
        training samples share fewer genes.

    Returns
    -------
    Gene names, most variable first (ties keep the first sample's gene order).

    Raises
    ------
    BadInputError
        When the training samples share no gene name.
    """
    common = set(gene_names[0])
    for names in gene_names[1:]:
        common &= set(names)
    order = [g for g in dict.fromkeys(gene_names[0]) if g in common]
    if not order:
        msg = (
            "the training samples share no gene name; check that every sample uses "
            "the same gene identifiers (symbols vs Ensembl ids)"
        )
        raise BadInputError(msg)
    tot = np.zeros(len(order))
    tot2 = np.zeros(len(order))
    n = 0
    for x, names in zip(targets, gene_names, strict=True):
        pos = {g: i for i, g in enumerate(names)}
        s, s2, rows = _column_variance(x)
        idx = np.array([pos[g] for g in order])
        tot += s[idx]
        tot2 += s2[idx]
        n += rows
    if n < 2:
        msg = "the training samples have fewer than 2 spots; the probe needs more spots"
        raise BadInputError(msg)
    mean = tot / n
    var = tot2 / n - mean * mean
    k = min(n_genes, len(order))
    if k < n_genes:
        log.warning("training samples share only %d genes; using all of them", k)
    top = np.argsort(-var, kind="stable")[:k]
    return [order[i] for i in top]


def gene_matrix(
    x: np.ndarray | sp.csr_matrix, names: Sequence[str], genes: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Return the dense ``(n_spots, len(genes))`` columns of ``genes`` and the missing.

    Genes absent from ``names`` are filled with zeros (the fill policy: an absent gene
    was not measured, i.e. zero counts); the caller warns and reports them.
    """
    pos = {g: i for i, g in enumerate(names)}
    out = np.zeros((x.shape[0], len(genes)), dtype=np.float64)
    present = [(j, pos[g]) for j, g in enumerate(genes) if g in pos]
    missing = [g for g in genes if g not in pos]
    if present:
        cols = np.array([p for _, p in present])
        sub = x[:, cols]
        sub = sub.toarray() if sp.issparse(sub) else np.asarray(sub)
        out[:, [j for j, _ in present]] = sub
    return out, missing


def pearson_per_gene(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``pred`` with the same column of ``target``.

    A column whose prediction or target is constant scores 0 (see module docstring).

    Examples
    --------
    >>> t = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    >>> pearson_per_gene(t * 2, t).tolist()
    [1.0, 0.0]
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    pc = p - p.mean(axis=0)
    tc = t - t.mean(axis=0)
    num = (pc * tc).sum(axis=0)
    den = np.sqrt((pc * pc).sum(axis=0) * (tc * tc).sum(axis=0))
    # constant up to rounding (relative to the column's magnitude) counts as constant
    const = _is_constant(pc, p) | _is_constant(tc, t)
    r = np.divide(num, den, out=np.zeros_like(num), where=(den > 0) & ~const)
    return np.clip(r, -1.0, 1.0)


def _is_constant(centred: np.ndarray, values: np.ndarray) -> np.ndarray:
    std = np.sqrt((centred * centred).mean(axis=0))
    scale = np.abs(values).max(axis=0)
    return std <= 1e-10 * np.maximum(scale, 1e-300)


@dataclass
class RidgeProbe:
    """A fitted HEST probe as plain arrays (scaler -> PCA -> ridge).

    ``predict`` needs only numpy, so a saved head is applied without scikit-learn
    objects or pickle.
    """

    scaler_mean: np.ndarray  # (D,)
    scaler_scale: np.ndarray  # (D,)
    pca_mean: np.ndarray  # (D,)
    pca_components: np.ndarray  # (n_pc, D)
    coef: np.ndarray  # (G, n_pc)
    offset: np.ndarray  # (G,) training target mean (Pearson-neutral, see module doc)
    alpha: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Feature dimension D the probe expects."""
        return int(self.scaler_mean.shape[0])

    @property
    def embed_dim(self) -> int:
        """Alias of :attr:`n_features` (the encoder's embedding size)."""
        return self.n_features

    @property
    def genes(self) -> list[str]:
        """Genes of the prediction columns (from ``meta``; empty when unknown)."""
        return list(self.meta.get("genes", []))

    @property
    def n_pc(self) -> int:
        """Number of PCA components."""
        return int(self.pca_components.shape[0])

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Scale and project ``(n, D)`` features to ``(n, n_pc)`` PCA scores."""
        x = np.asarray(features, dtype=np.float64)
        return ((x - self.scaler_mean) / self.scaler_scale - self.pca_mean) @ (
            self.pca_components.T
        )

    def predict(self, features: np.ndarray, *, offset: bool = True) -> np.ndarray:
        """Predict ``(n, G)`` targets; ``offset=False``: HEST's raw ridge output."""
        y = self.transform(features) @ self.coef.T
        return y + self.offset if offset else y

    def arrays(self) -> dict[str, np.ndarray]:
        """Return the arrays by name (what a saved head stores)."""
        return {
            "scaler_mean": self.scaler_mean,
            "scaler_scale": self.scaler_scale,
            "pca_mean": self.pca_mean,
            "pca_components": self.pca_components,
            "coef": self.coef,
            "offset": self.offset,
        }


def fit_probe(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    alpha: float | str = "hest",
    n_pc: int = N_PC,
    seed: int = 0,
) -> RidgeProbe:
    """Fit the HEST probe: StandardScaler, PCA ``min(n_pc, n, D)``, ridge (lsqr).

    Parameters
    ----------
    features
        ``(n_train, D)`` training features.
    targets
        ``(n_train, G)`` training targets (not centred, as in HEST).
    alpha
        ``"hest"`` (``100 / (n_pc * G)``) or a positive number.
    n_pc
        Maximum number of PCA components (HEST: 256).
    seed
        ``random_state`` of the PCA (its randomised solver would otherwise make
        repeated runs differ in the last digits).
    """
    return _fit_probes(features, targets, alphas=[alpha], n_pc=n_pc, seed=seed)[0]


def _fit_probes(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    alphas: Sequence[float | str],
    n_pc: int = N_PC,
    seed: int = 0,
) -> list[RidgeProbe]:
    """Fit the scaler and PCA once, then one ridge per alpha (see :func:`fit_probe`)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        msg = f"features {x.shape} and targets {y.shape} do not pair spot by spot"
        raise BadInputError(msg)
    if x.shape[0] < 2:
        msg = "the probe needs at least 2 training spots; add training samples"
        raise BadInputError(msg)
    if not np.all(np.isfinite(x)):
        msg = "features contain NaN or inf; check the encoder weights and precision"
        raise BadInputError(msg)
    k = int(min(n_pc, x.shape[0], x.shape[1]))
    values = [
        hest_alpha(k, n_genes=y.shape[1]) if a == "hest" else float(a) for a in alphas
    ]
    if not all(a > 0 for a in values):
        msg = f"ridge alpha must be positive, got {list(alphas)!r}"
        raise BadInputError(msg)
    scaler = StandardScaler()
    pca = PCA(n_components=k, random_state=seed)
    # fit_transform, as an sklearn Pipeline does: lsqr stops at a relative tolerance,
    # so even round-off-level differences in the scores move the coefficients a little
    z = pca.fit_transform(scaler.fit_transform(x))
    out = []
    for a in values:
        ridge = Ridge(alpha=a, fit_intercept=False, solver="lsqr", max_iter=1000)
        ridge.fit(z, y)
        out.append(
            RidgeProbe(
                scaler_mean=np.asarray(scaler.mean_, dtype=np.float64),
                scaler_scale=np.asarray(scaler.scale_, dtype=np.float64),
                pca_mean=np.asarray(pca.mean_, dtype=np.float64),
                pca_components=np.asarray(pca.components_, dtype=np.float64),
                coef=np.atleast_2d(np.asarray(ridge.coef_, dtype=np.float64)),
                offset=y.mean(axis=0),
                alpha=a,
                meta={"n_pc": k, "n_train": int(x.shape[0])},
            )
        )
    return out


def cv_alpha(
    features: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    *,
    grid: Sequence[float] = CV_ALPHA_GRID,
    n_pc: int = N_PC,
) -> tuple[float, dict[float, float]]:
    """Choose the ridge alpha by leave-one-sample-out over the training samples.

    Parameters
    ----------
    features, targets
        One ``(n_i, D)`` / ``(n_i, G)`` pair per training sample (same gene columns).
    grid
        Alphas to try.
    n_pc
        Maximum PCA components, as in :func:`fit_probe`.

    Returns
    -------
    The alpha with the best mean (over inner folds) of the mean-over-genes Pearson r
    (ties: the smaller alpha), and the score of every alpha.
    """
    if len(features) < 2:
        msg = (
            "alpha='cv' needs at least 2 training samples (inner leave-one-sample-out);"
            " add a training sample or use alpha='hest'"
        )
        raise BadInputError(msg)
    scores = {float(a): [] for a in grid}
    for i in range(len(features)):
        x_tr = np.concatenate([f for j, f in enumerate(features) if j != i])
        y_tr = np.concatenate([t for j, t in enumerate(targets) if j != i])
        probes = _fit_probes(x_tr, y_tr, alphas=[float(a) for a in grid], n_pc=n_pc)
        for a, probe in zip(grid, probes, strict=True):
            r = pearson_per_gene(probe.predict(features[i], offset=False), targets[i])
            scores[float(a)].append(float(r.mean()))
    mean = {a: float(np.mean(v)) for a, v in scores.items()}
    best = max(mean, key=lambda a: (mean[a], -a))
    return best, mean
