"""HEST-style benchmark of an encoder (frozen or SEAL-fine-tuned) on ST samples.

:func:`bench` embeds a spot-centred patch per spot (the encoder's own ``tile_px`` and
``mpp``), fits the HEST linear probe on the training samples and scores Pearson r
per gene on each test sample (protocol details: :mod:`napari_seal.predict.probe`).
:func:`loso_bench` leaves each sample out in turn. Every report also carries the
*depth oracle*: the same probe on one feature, ``log1p`` of the spot's total count,
which tells how much of a score cell density alone explains.

Examples
--------
>>> from napari_seal.evaluate.benchmark import bench  # doctest: +SKIP
>>> result = bench(["C2", "C3", "C4"], ["C5"], encoder="color-stats")  # doctest: +SKIP
>>> result["pearson_mean"]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import napari_seal.predict.probe as _probe
import napari_seal.predict.saved_probe as _head
from napari_seal.errors import BadInputError
from napari_seal.predict.features import (
    FeatureSource,
    as_samples,
    sample_names,
    spot_features,
)
from napari_seal.predict.probe import RidgeProbe
from napari_seal.predict.saved_probe import apply_head, load_head
from napari_seal.progress import Progress, drain

__all__ = [
    "apply_head",
    "bench",
    "iter_bench",
    "load_head",
    "loso_bench",
]

log = logging.getLogger(__name__)

#: A test sample missing more than this fraction of the probe's genes is bad input
#: (almost always other gene identifiers), not something to fill with zeros.
MAX_MISSING_FRACTION = 0.5


def _check_modes(targets: str, alpha: Any) -> None:
    if targets not in _probe.TARGET_MODES:
        modes = _probe.TARGET_MODES
        msg = f"targets={targets!r} is not a target mode; use one of {modes}"
        raise BadInputError(msg)
    if isinstance(alpha, str) and alpha not in _probe.ALPHA_MODES:
        msg = f"alpha={alpha!r} is not an alpha mode; use one of {_probe.ALPHA_MODES}"
        raise BadInputError(msg)
    if not isinstance(alpha, str) and not (float(alpha) > 0):
        msg = f"alpha must be 'hest', 'cv' or a positive number, got {alpha!r}"
        raise BadInputError(msg)


def _fit_fold(
    feats: list[np.ndarray], ys: list[np.ndarray], *, alpha: Any
) -> tuple[RidgeProbe, dict[float, float] | None]:
    """Fit the probe (choosing alpha first for ``"cv"``) on one fold's training data."""
    cv_scores = None
    a = alpha
    if alpha == "cv":
        a, cv_scores = _probe.cv_alpha(feats, ys)
    probe = _probe.fit_probe(np.concatenate(feats), np.concatenate(ys), alpha=a)
    return probe, cv_scores


def _score(
    probe: RidgeProbe,
    genes: list[str],
    feat: np.ndarray,
    tgt: Any,
    names: list[str],
    *,
    test_name: str,
    warn: bool = True,
) -> dict[str, Any]:
    y, missing = _probe.gene_matrix(tgt, names, genes)
    if len(missing) > MAX_MISSING_FRACTION * len(genes):
        msg = (
            f"test sample {test_name} lacks {len(missing)} of the {len(genes)} genes "
            f"the probe predicts (e.g. {missing[:3]}); it probably uses other gene "
            "identifiers (symbols vs Ensembl ids): convert its var_names to match "
            "the training samples"
        )
        raise BadInputError(msg)
    if missing and warn:
        log.warning(
            "test sample %s lacks %d probe genes (%s); filled with zeros, "
            "they score r = 0",
            test_name,
            len(missing),
            ", ".join(missing),
        )
    r = _probe.pearson_per_gene(probe.predict(feat, offset=False), y)
    return {
        "test": test_name,
        "pearson_mean": float(r.mean()),
        "per_gene": {g: float(v) for g, v in zip(genes, r, strict=True)},
        "n_spots": int(len(feat)),
        "missing_genes": missing,
    }


def _folds(
    n_train: int, n_test: int, *, loso: bool, alpha: Any, save_head: bool
) -> list[tuple[list[int], list[int]]]:
    """Return ``(train indices, test indices)`` per fold, or raise on bad counts."""
    if loso:
        if n_test:
            msg = "leave-one-out takes one list of samples: use --loso alone, no --test"
            raise BadInputError(msg)
        if n_train < 2:
            msg = (
                f"leave-one-sample-out needs at least 2 samples, got {n_train}; "
                "add samples or use --train/--test"
            )
            raise BadInputError(msg)
        if save_head:
            msg = (
                "--save-head needs one fitted probe: use --train/--test instead of "
                "--loso"
            )
            raise BadInputError(msg)
        folds = [([j for j in range(n_train) if j != i], [i]) for i in range(n_train)]
    else:
        if not n_train:
            msg = "no training samples; give at least one with --train"
            raise BadInputError(msg)
        if not n_test:
            msg = "no test samples: --train needs --test SAMPLE... (or use --loso)"
            raise BadInputError(msg)
        folds = [(list(range(n_train)), list(range(n_train, n_train + n_test)))]
    if alpha == "cv" and min(len(tr) for tr, _ in folds) < 2:
        msg = (
            "alpha='cv' needs at least 2 training samples per fold (inner "
            "leave-one-sample-out); add training samples or use --alpha hest"
        )
        raise BadInputError(msg)
    return folds


def iter_bench(
    train: Sequence[Any],
    test: Sequence[Any] | None = None,
    *,
    encoder: Any = None,
    run: Any = None,
    weights: str | Path | None = None,
    targets: str = "hest",
    alpha: str | float = "hest",
    loso: bool = False,
    save_head: str | Path | None = None,
    batch_size: int = 64,
    device: str | None = None,
    features_cache: dict | None = None,
) -> Generator[Progress, None, dict[str, Any]]:
    """Generator twin of :func:`bench`: yields progress events, returns the report."""
    t0 = time.perf_counter()
    _check_modes(targets, alpha)
    if batch_size < 1:
        msg = f"batch_size must be at least 1, got {batch_size}"
        raise BadInputError(msg)
    train, test = list(train or []), list(test or [])
    folds = _folds(
        len(train), len(test), loso=loso, alpha=alpha, save_head=save_head is not None
    )
    # then the encoder: a wrong name or weight file fails before any sample is read
    source = FeatureSource(encoder, run, weights, device)
    if save_head is not None and source.encoder is None:
        msg = "the depth oracle has no image features; --save-head needs an encoder"
        raise BadInputError(msg)
    samples = as_samples(train + test)
    names = sample_names(samples)
    cache = features_cache if features_cache is not None else {}
    feats: list[np.ndarray] = []
    for s, name in zip(samples, names, strict=True):
        key = (source.key, name, int(s.n_spots))
        if key not in cache:
            cache[key] = yield from spot_features(
                s, source.encoder, batch_size=batch_size, device=device
            )
        feats.append(cache[key])
    counts = [_probe.raw_counts(s.adata) for s in samples]
    tgts = [_probe.make_targets(c, mode=targets) for c in counts]
    genes_of = [[str(g) for g in s.adata.var_names] for s in samples]
    depth = [_probe.depth_feature(c) for c in counts]

    results, depth_results, all_genes = [], [], {}
    head = None
    for k, (tr, te) in enumerate(folds):
        yield Progress(
            "probe",
            done=k,
            total=len(folds),
            unit="folds",
            message=",".join(names[i] for i in te),
        )
        genes = _probe.select_genes([tgts[i] for i in tr], [genes_of[i] for i in tr])
        ys = [_probe.gene_matrix(tgts[i], genes_of[i], genes)[0] for i in tr]
        probe, cv_scores = _fit_fold([feats[i] for i in tr], ys, alpha=alpha)
        dprobe, _ = _fit_fold([depth[i] for i in tr], ys, alpha=alpha)
        all_genes.update(dict.fromkeys(genes))
        for i in te:
            fold = _score(
                probe, genes, feats[i], tgts[i], genes_of[i], test_name=names[i]
            )
            dfold = _score(
                dprobe,
                genes,
                depth[i],
                tgts[i],
                genes_of[i],
                test_name=names[i],
                warn=False,
            )
            fold.update(
                train=[names[j] for j in tr],
                n_train=probe.meta["n_train"],
                n_pc=probe.n_pc,
                alpha_value=probe.alpha,
                depth_pearson_mean=dfold["pearson_mean"],
            )
            if loso:
                fold["genes"] = genes
            if cv_scores is not None:
                fold["cv_scores"] = {f"{a:g}": v for a, v in cv_scores.items()}
            results.append(fold)
            depth_results.append(
                {kk: dfold[kk] for kk in ("test", "pearson_mean", "per_gene")}
            )
        head = (probe, genes)
    yield Progress("probe", done=len(folds), total=len(folds), unit="folds")

    from napari_seal import __version__

    means = [f["pearson_mean"] for f in results]
    report: dict[str, Any] = {
        "encoder": source.name,
        "protocol": "hest",
        "targets": targets,
        "alpha": alpha if isinstance(alpha, str) else float(alpha),
        "genes": list(all_genes),
        "folds": results,
        "pearson_mean": float(np.mean(means)),
        "pearson_std": float(np.std(means)),
        "mode": "loso" if loso else "train-test",
        "n_train": int(sum(len(feats[i]) for i in folds[0][0])) if not loso else None,
        "alpha_value": results[0]["alpha_value"] if not loso else None,
        "depth_oracle": {
            "pearson_mean": float(np.mean([d["pearson_mean"] for d in depth_results])),
            "folds": depth_results,
        },
        **{k: v for k, v in source.identity().items() if k != "encoder"},
        "embed_dim": int(feats[0].shape[1]),
        "version": __version__,
    }
    if save_head is not None and head is not None:
        probe, genes = head
        meta = {
            **source.identity(),
            "targets": targets,
            "alpha": report["alpha"],
            "genes": genes,
            "train": [names[i] for i in folds[0][0]],
            "n_train": probe.meta["n_train"],
            "version": __version__,
            "offset": "training mean of each target (Pearson-neutral)",
        }
        report["head"] = str(_head.save_probe(save_head, probe, meta))
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def bench(
    train: Sequence[Any],
    test: Sequence[Any] | None = None,
    *,
    encoder: Any = None,
    run: Any = None,
    weights: str | Path | None = None,
    targets: str = "hest",
    alpha: str | float = "hest",
    loso: bool = False,
    save_head: str | Path | None = None,
    batch_size: int = 64,
    device: str | None = None,
    features_cache: dict | None = None,
    progress: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Benchmark an encoder with the HEST probe (DESIGN 5 ``bench``).

    Parameters
    ----------
    train
        Training samples (:class:`~napari_seal.io.sample.SpatialSample` or HEST sample
        folders). With ``loso=True``: all samples, each left out in turn.
    test
        Test samples, each scored separately (``None`` with ``loso=True``).
    encoder
        Registry name (default ``"default"``), an ``Encoder``, or ``"depth"`` (the
        depth oracle as the only feature).
    run
        A SEAL run folder (or loaded run): its LoRA-merged encoder is benchmarked.
    weights
        Weight file for a registry encoder.
    targets
        ``"hest"`` (``log1p`` raw counts) or ``"normalized"`` (1e4 per spot, ``log1p``).
    alpha
        ``"hest"`` (``100 / (n_pc * 50)``), ``"cv"`` (inner leave-one-sample-out on
        the training samples) or a positive number.
    loso
        Leave one sample out in turn (each sample is embedded once).
    save_head
        Save the fitted probe here (train/test mode only); see :func:`load_head`.
    batch_size
        Patches per forward pass.
    device
        Torch device.
    features_cache
        Optional dict reused across calls to skip re-embedding the same samples
        with the same encoder.
    progress
        Called with each :class:`~napari_seal.progress.Progress` event.

    Returns
    -------
    The report: ``{"encoder", "protocol", "targets", "alpha", "genes", "folds":
    [{"test", "pearson_mean", "per_gene", ...}], "pearson_mean", ...}`` plus
    ``depth_oracle``, ``alpha_value``, ``n_train``, ``seconds``...
    """
    gen = iter_bench(
        train,
        test,
        encoder=encoder,
        run=run,
        weights=weights,
        targets=targets,
        alpha=alpha,
        loso=loso,
        save_head=save_head,
        batch_size=batch_size,
        device=device,
        features_cache=features_cache,
    )
    return drain(gen, progress)


def loso_bench(samples: Sequence[Any], **kwargs: Any) -> dict[str, Any]:
    """Leave-one-sample-out :func:`bench` (same keywords, no ``test``)."""
    return bench(samples, None, loso=True, **kwargs)
