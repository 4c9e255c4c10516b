"""SEAL run vs its frozen base encoder on the HEST probe (Fine-tune widget's chart)."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from napari_seal.errors import BadInputError
from napari_seal.progress import Progress, drain

__all__ = ["compare_with_base", "iter_compare_with_base"]


def iter_compare_with_base(
    samples: Sequence[str | Path],
    run_dir: str | Path,
    *,
    targets: str = "hest",
    device: str | None = None,
) -> Generator[Progress, None, dict[str, float]]:
    """Leave-one-sample-out mean Pearson of the frozen base encoder and the SEAL run.

    Parameters
    ----------
    samples
        Two or more HEST sample folders.
    run_dir
        The SEAL run; its base encoder (and weights) is the frozen baseline.
    targets
        ``"hest"`` or ``"normalized"`` (see
        :func:`napari_seal.evaluate.benchmark.bench`).
    device
        Torch device.

    Returns
    -------
    ``{"frozen <encoder>": r, "SEAL": r}``. When the run was fine-tuned on these
    samples the SEAL number is a within-training figure, not a held-out one.
    """
    from napari_seal.evaluate.benchmark import iter_bench
    from napari_seal.io.hest import load_sample
    from napari_seal.training.runs import load_run

    if len(samples) < 2:
        msg = "the comparison leaves one sample out: give two or more samples"
        raise BadInputError(msg)
    loaded = [load_sample(Path(s)) for s in samples]
    run = load_run(Path(run_dir), device=device)
    base = run.config.encoder
    yield Progress("bench", 0, 2, "models", f"frozen {base}")
    frozen = yield from iter_bench(loaded, encoder=base, weights=run.config.weights,
                                   loso=True, targets=targets, device=device)
    yield Progress("bench", 1, 2, "models", "SEAL run")
    seal = yield from iter_bench(loaded, run=run, loso=True, targets=targets,
                                 device=device)
    yield Progress("bench", 2, 2, "models", "done")
    return {f"frozen {base}": float(frozen["pearson_mean"]),
            "SEAL": float(seal["pearson_mean"])}


def compare_with_base(samples: Sequence[str | Path], run_dir: str | Path, *,
                      progress=None, **kwargs: Any) -> dict[str, float]:
    """Run :func:`iter_compare_with_base` to completion."""
    return drain(iter_compare_with_base(samples, run_dir, **kwargs), progress)
