"""The reference bank of a SEAL run: the measured expression of its training spots.

``napari-seal train`` writes it beside the heads (``RUN/reference.npz``); it is what a
new slide is compared with:

- exemplar gene queries (:mod:`napari_seal.retrieval.scoring`): the query vector is the
  mean omics embedding of the training spots high in the query genes, a point the
  omics encoder has seen, instead of a synthetic profile it never saw;
- the reliability map (:mod:`napari_seal.predict.reliability`): a tile whose nearest
  training spots disagree about a gene gets a low confidence for it.

The file is a compressed ``np.savez`` archive (read with ``allow_pickle=False``)::

    expr     (n, G) float16  panel-space expression (smoothed, log1p CP10k) of the spots
    sample   (n,)   int32    index into ``samples``
    samples  (S,)   str      training sample names
    genes    (G,)   str      the run's panel, in order (checked on load)

Only expression is stored: the omics embeddings are recomputed from it with the run's
own omics encoder (milliseconds for thousands of spots), so the bank stays small
(~0.5 MB for the shipped model's 910 spots x 298 genes).
"""

from __future__ import annotations

import io
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.errors import CheckpointError
from napari_seal.training.omics_space import encode_expression, omics_space

__all__ = [
    "BANK",
    "MIN_BANK",
    "bank_embeddings",
    "bank_input",
    "bank_zscores",
    "has_bank",
    "ReferenceBank",
    "bank_from_pairs",
    "bank_from_samples",
    "load_bank",
    "write_bank",
]

log = logging.getLogger(__name__)

BANK = "reference.npz"
#: fewer reference spots than this are no basis for exemplars or neighbours
MIN_BANK = 8


@dataclass(frozen=True)
class ReferenceBank:
    """Training spots' panel-space expression.

    Parameters
    ----------
    expr
        ``(n, G)`` float32 panel-space expression (the omics encoder's input).
    sample
        ``(n,)`` index into ``samples``.
    samples
        Names of the training samples.
    genes
        The panel the columns follow.
    """

    expr: np.ndarray
    sample: np.ndarray
    samples: tuple[str, ...]
    genes: tuple[str, ...]

    @property
    def n_spots(self) -> int:
        """Number of reference spots."""
        return int(self.expr.shape[0])

    def save(self, path: str | Path) -> Path:
        """Write the bank atomically (``np.savez_compressed``, no pickles)."""
        from napari_seal.io.atomic import atomic_write_bytes

        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            expr=self.expr.astype(np.float16),
            sample=self.sample.astype(np.int32),
            samples=np.asarray(self.samples, dtype=str),
            genes=np.asarray(self.genes, dtype=str),
        )
        return atomic_write_bytes(Path(path), buf.getvalue())


def bank_from_pairs(pairs: Sequence[Any], genes: Sequence[str]) -> ReferenceBank:
    """The bank of training :class:`~napari_seal.training.dataset.SpotPairs`.

    Several pair sets (training and held-out evaluation spots) of the same samples
    are concatenated.
    """
    pairs = [p for p in pairs if p is not None and len(p)]
    if not pairs:
        return ReferenceBank(
            np.zeros((0, len(genes)), np.float32),
            np.zeros(0, np.int32),
            (),
            tuple(genes),
        )
    return ReferenceBank(
        expr=np.concatenate([np.asarray(p.expr, np.float32) for p in pairs]),
        sample=np.concatenate([np.asarray(p.sample_index, np.int32) for p in pairs]),
        samples=tuple(pairs[0].sample_names),
        genes=tuple(genes),
    )


def bank_from_samples(
    panel: Any, samples: Sequence[Any], *, max_missing_fraction: float = 0.5
) -> ReferenceBank:
    """Build the bank of ``samples`` with the run's panel (its own preprocessing).

    Used by ``train`` (on its training samples) and to add a bank to a run trained
    before banks existed (``scripts/make_shipped_model.py``, the benchmarks).
    """
    exprs, idx, names = [], [], []
    for i, s in enumerate(samples):
        e = np.asarray(
            panel.expression(s, max_missing_fraction=max_missing_fraction),
            dtype=np.float32,
        )
        e = e[e.sum(axis=1) > 0]  # spots without counts are not trained on either
        exprs.append(e)
        idx.append(np.full(len(e), i, dtype=np.int32))
        names.append(str(getattr(s, "name", f"sample-{i}")))
    n_genes = len(panel.genes)
    return ReferenceBank(
        expr=np.concatenate(exprs) if exprs else np.zeros((0, n_genes), np.float32),
        sample=np.concatenate(idx) if idx else np.zeros(0, np.int32),
        samples=tuple(names),
        genes=tuple(panel.genes),
    )


def write_bank(run_dir: str | Path, bank: ReferenceBank) -> Path:
    """Write ``bank`` into a run folder (``RUN/reference.npz``)."""
    return bank.save(Path(run_dir) / BANK)


def load_bank(run_dir: str | Path, genes: Sequence[str]) -> ReferenceBank | None:
    """Read a run's bank; ``None`` for runs trained before banks existed.

    Raises
    ------
    CheckpointError
        The file is damaged or does not fit the run's panel.
    """
    path = Path(run_dir) / BANK
    if not path.is_file():
        return None
    damaged = f"{path} is damaged"
    try:
        with np.load(path, allow_pickle=False) as z:
            expr = np.asarray(z["expr"], dtype=np.float32)
            sample = np.asarray(z["sample"], dtype=np.int64)
            samples = tuple(str(s) for s in z["samples"])
            bank_genes = tuple(str(g) for g in z["genes"])
    except (OSError, ValueError, KeyError, EOFError) as err:  # incl. BadZipFile
        msg = f"{damaged} ({type(err).__name__}: {err}); retrain the run or delete it"
        raise CheckpointError(msg) from err
    if bank_genes != tuple(genes) or expr.ndim != 2 or expr.shape[1] != len(genes):
        msg = f"{damaged}: its genes do not match the run's panel; delete it"
        raise CheckpointError(msg)
    if sample.shape != (expr.shape[0],) or not np.isfinite(expr).all():
        msg = f"{damaged}: inconsistent shapes or non-finite values; delete it"
        raise CheckpointError(msg)
    return ReferenceBank(expr, sample, samples, bank_genes)


_CACHE: weakref.WeakKeyDictionary[Any, tuple[int, np.ndarray]] = (
    weakref.WeakKeyDictionary()
)


def has_bank(run: Any) -> bool:
    """Whether the run carries a usable reference bank."""
    bank = getattr(run, "bank", None)
    return bank is not None and bank.n_spots >= MIN_BANK


def bank_input(run: Any) -> np.ndarray:
    """The bank spots in the omics encoder's input space ``(n, G)``."""
    expr = np.asarray(run.bank.expr, dtype=np.float32)
    if omics_space(run) == "zscore":
        return np.asarray(run.panel.zscore(expr), dtype=np.float32)
    return expr


_ZSCORES: dict[int, tuple[Any, Any, np.ndarray]] = {}


def bank_zscores(run: Any) -> np.ndarray:
    """The bank spots' z-scored panel expression ``(n, G)`` (training statistics).

    Read-only and cached per bank and panel (the live overlay asks for it at every
    batch and gene switch; ~1 ms each otherwise).
    """
    bank, panel = run.bank, run.panel
    hit = _ZSCORES.get(id(bank))
    if hit is not None and hit[0] is bank and hit[1] is panel:
        return hit[2]
    z = np.asarray(panel.zscore(bank.expr), dtype=np.float32)
    z.setflags(write=False)
    if len(_ZSCORES) >= 4:
        _ZSCORES.pop(next(iter(_ZSCORES)))
    _ZSCORES[id(bank)] = (bank, panel, z)
    return z


def bank_embeddings(run: Any) -> np.ndarray:
    """Unit omics embeddings ``(n, D)`` of the bank spots (cached per omics module)."""
    hit = _CACHE.get(run.omics)
    if hit is not None and hit[0] == id(run.bank):
        return hit[1]
    emb = encode_expression(run, bank_input(run))
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    _CACHE[run.omics] = (id(run.bank), emb)
    return emb
