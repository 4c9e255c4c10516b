"""Paired spot patches and expression, pre-extracted into memory.

Each training spot contributes a ``tile_px`` x ``tile_px`` uint8 patch at the encoder's
``mpp`` centred on the spot (resampled from the slide's own pixel size by
:func:`napari_seal.tiling.grid.spot_patches`) and its panel-space expression row.
Patches are read once, so the training loop never touches the slide and needs no
DataLoader worker processes (it runs inside napari's thread worker as well as in a
terminal). Batches come from a permutation seeded by ``(seed, epoch)``, so a resumed run
sees the same order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_seal.errors import TrainingConfigError

if TYPE_CHECKING:
    from napari_seal.io.sample import SpatialSample
    from napari_seal.training.expression import Preprocessed
    from napari_seal.training.preprocess import GenePanel

__all__ = ["SpotPairs", "build_spot_pairs"]

log = logging.getLogger(__name__)


@dataclass
class SpotPairs:
    """Spot-centred patches paired with expression.

    Attributes
    ----------
    images
        ``(N, tile_px, tile_px, 3)`` uint8.
    expr
        ``(N, G)`` float32 log-normalised (smoothed) expression in panel order.
    sample_index
        ``(N,)`` index into ``sample_names``.
    spot_ids
        ``(N,)`` the spots' obs names.
    sample_names
        Names of the samples, in input order.
    """

    images: np.ndarray
    expr: np.ndarray
    sample_index: np.ndarray
    spot_ids: np.ndarray
    sample_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray) -> SpotPairs:
        """Return the pairs at ``index`` (a copy)."""
        index = np.asarray(index)
        return SpotPairs(
            self.images[index],
            self.expr[index],
            self.sample_index[index],
            self.spot_ids[index],
            self.sample_names,
        )

    def split(
        self, fraction: float, *, seed: int
    ) -> tuple[SpotPairs, SpotPairs | None]:
        """Hold out ``fraction`` of the spots (seeded) ``(train, held_out or None)``."""
        n_eval = int(round(fraction * len(self)))
        if n_eval == 0:
            return self, None
        perm = np.random.default_rng([seed, 7919]).permutation(len(self))
        return self.subset(np.sort(perm[n_eval:])), self.subset(np.sort(perm[:n_eval]))

    def with_shuffled_pairs(self, *, seed: int) -> SpotPairs:
        """Control: permute expression rows among the spots of each sample (seeded).

        Images keep their place; each sample's expression distribution is unchanged,
        only which spot it belongs to is broken.
        """
        rng = np.random.default_rng([seed, 104729])
        order = np.arange(len(self))
        for s in range(len(self.sample_names)):
            idx = np.flatnonzero(self.sample_index == s)
            order[idx] = idx[rng.permutation(idx.size)]
        return SpotPairs(
            self.images,
            self.expr[order],
            self.sample_index,
            self.spot_ids,
            self.sample_names,
        )

    def steps_per_epoch(self, batch_size: int) -> int:
        """Full batches per epoch (the last incomplete batch is dropped)."""
        return len(self) // batch_size

    def epoch_order(self, epoch: int, *, seed: int) -> np.ndarray:
        """The spot permutation of ``epoch`` (same on every rank)."""
        return np.random.default_rng([seed, epoch]).permutation(len(self))

    def batch_index(
        self,
        epoch: int,
        step: int,
        *,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> np.ndarray:
        """Indices of this rank's share of global batch ``step`` of ``epoch``."""
        order = self.epoch_order(epoch, seed=seed)
        glob = order[step * batch_size : (step + 1) * batch_size]
        per = batch_size // world_size
        return glob[rank * per : (rank + 1) * per]


def build_spot_pairs(
    samples: Sequence[SpatialSample],
    panel: GenePanel,
    *,
    tile_px: int,
    mpp: float,
    preprocessed: Sequence[Preprocessed] | None = None,
    max_missing_fraction: float = 0.5,
) -> SpotPairs:
    """Extract spot patches and panel expression for ``samples``.

    Spots with no counts at all are dropped (``filter_cells(min_counts=1)`` in SEAL).

    Parameters
    ----------
    samples
        Training samples.
    panel
        The run's gene panel.
    tile_px, mpp
        Patch size in pixels and pixel size in um of the encoder input.
    preprocessed
        :func:`~napari_seal.training.preprocess.preprocess_sample` output of the same
        samples, when already computed.
    max_missing_fraction
        See :meth:`GenePanel.expression`.
    """
    from napari_seal.tiling.grid import spot_patches
    from napari_seal.training.expression import preprocess_sample

    images, exprs, sidx, ids = [], [], [], []
    for i, sample in enumerate(samples):
        prep = (
            preprocessed[i]
            if preprocessed is not None
            else preprocess_sample(sample, **panel._prep_kwargs())
        )
        keep = np.flatnonzero(prep.spot_totals > 0)
        if keep.size < prep.n_spots:
            log.warning(
                "sample %s: %d spots without counts are left out",
                sample.name,
                prep.n_spots - keep.size,
            )
        expr = panel.expression(prep, max_missing_fraction=max_missing_fraction)[keep]
        patches = spot_patches(sample, size_px=tile_px, mpp=mpp)
        if patches.shape[0] != prep.n_spots:
            msg = (
                f"spot_patches returned {patches.shape[0]} patches for "
                f"{prep.n_spots} spots of {sample.name}"
            )
            raise RuntimeError(msg)
        images.append(np.ascontiguousarray(patches[keep], dtype=np.uint8))
        exprs.append(expr)
        sidx.append(np.full(keep.size, i, dtype=np.int64))
        ids.append(np.asarray(sample.adata.obs_names)[keep])
    if not images or sum(len(e) for e in exprs) == 0:
        msg = "the training samples have no spots with counts; check their st/*.h5ad"
        raise TrainingConfigError(msg)
    return SpotPairs(
        np.concatenate(images),
        np.concatenate(exprs),
        np.concatenate(sidx),
        np.concatenate(ids),
        tuple(s.name for s in samples),
    )
