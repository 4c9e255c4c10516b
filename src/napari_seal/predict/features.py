"""Feature sources of :mod:`napari_seal.evaluate.benchmark`: encoders, SEAL runs, depth.

Imports torch only inside functions (through the registry, runs and inference).
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import napari_seal.predict.probe as _probe
from napari_seal.errors import BadInputError
from napari_seal.progress import Progress

__all__ = ["DEPTH", "FeatureSource", "as_samples", "sample_names", "spot_features"]

#: Pseudo-encoder name: the depth oracle (``log1p`` total counts) as the only feature.
DEPTH = "depth"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureSource:
    """Where features come from: a registry encoder, a SEAL run's encoder, or depth."""

    def __init__(
        self, encoder: Any, run: Any, weights: Any, device: str | None
    ) -> None:
        self.run_path: str | None = None
        self._run_key: str | None = None
        self.weights: str | None = None
        self.weights_sha256: str | None = None
        self._weights_arg = weights
        if encoder is not None and run is not None:
            msg = "give an encoder or a SEAL run, not both (--encoder or --run)"
            raise BadInputError(msg)
        if run is not None:
            if weights is not None:
                msg = (
                    "--weights goes with --encoder; a SEAL run already has its weights"
                )
                raise BadInputError(msg)
            from napari_seal.training.runs import load_run

            seal_run = (
                load_run(run, device=device) if isinstance(run, str | Path) else run
            )
            path = run if isinstance(run, str | Path) else getattr(run, "path", None)
            self.run_path = str(Path(path).resolve()) if path is not None else None
            # a run object without a path must never share cached features with
            # another encoder of the same name
            self._run_key = self.run_path or f"run@{id(seal_run)}"
            self.encoder = seal_run.encoder
            self.name = str(self.encoder.name)
        elif encoder == DEPTH:
            self.encoder = None
            self.name = DEPTH
        elif encoder is None or isinstance(encoder, str):
            from napari_seal.models.factory import create_encoder

            self.encoder = create_encoder(
                encoder or "default", weights=weights, device=device
            )
            self.name = str(self.encoder.name)
        else:
            self.encoder = encoder
            self.name = str(encoder.name)
            # an in-memory encoder: its weights are unknown, never share its features
            self._run_key = f"encoder@{id(encoder)}"
        w = getattr(self.encoder, "weights", None) if self.encoder is not None else None
        if w is None and weights is not None:
            w = weights
        if w is not None and Path(w).is_file():
            self.weights = str(Path(w).resolve())
            self.weights_sha256 = _sha256_file(Path(w))

    @property
    def key(self) -> tuple:
        """Identity of the features (``features_cache`` key, with the sample)."""
        # weights that are not a file (e.g. "random") still tell encoders apart
        wkey = self.weights_sha256 or (
            str(self._weights_arg) if self._weights_arg else None
        )
        return (self.name, wkey, self._run_key)

    def identity(self) -> dict[str, Any]:
        enc = self.encoder
        return {
            "encoder": self.name,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "run": self.run_path,
            "tile_px": getattr(enc, "tile_px", None),
            "mpp": getattr(enc, "mpp", None),
        }


def spot_features(
    sample: Any, encoder: Any, *, batch_size: int = 64, device: str | None = None
) -> Generator[Progress, None, np.ndarray]:
    """Embed the spot-centred patch of every spot; yield a :class:`Progress` per batch.

    Parameters
    ----------
    sample
        A :class:`~napari_seal.io.sample.SpatialSample`.
    encoder
        An :class:`~napari_seal.models.factory.Encoder` (``None``: depth feature).
    batch_size
        Patches per forward pass.
    device
        Torch device for the encoder.

    Returns
    -------
    ``(n_spots, D)`` float32 features, in the sample's spot order.
    """
    if encoder is None:
        return _probe.depth_feature(_probe.raw_counts(sample.adata)).astype(np.float32)
    from napari_seal.models.inference import encode_images
    from napari_seal.tiling.grid import spot_patches

    patches = spot_patches(sample, size_px=int(encoder.tile_px), mpp=float(encoder.mpp))
    n = len(patches)
    out = []
    for start in range(0, n, batch_size):
        chunk = patches[start : start + batch_size]
        out.append(
            np.asarray(
                encode_images(encoder, chunk, batch_size=batch_size, device=device),
                dtype=np.float32,
            )
        )
        yield Progress(
            "features",
            done=min(n, start + batch_size),
            total=n,
            unit="spots",
            message=str(sample.name),
        )
    if not out:
        msg = f"sample {sample.name} has no spots; nothing to benchmark"
        raise BadInputError(msg)
    return np.concatenate(out)


def as_samples(samples: Sequence[Any] | None) -> list[Any]:
    out = []
    for s in samples or []:
        if isinstance(s, str | Path):
            if not Path(s).exists():
                msg = (
                    f"sample {s} does not exist; give HEST-layout sample folders "
                    "(make them with `napari-seal import`)"
                )
                raise BadInputError(msg)
            from napari_seal.io.hest import load_sample

            s = load_sample(s)
        out.append(s)
    return out


def sample_names(samples: list[Any]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for s in samples:
        base = str(getattr(s, "name", "sample"))
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return names
