"""Shared test fixtures: where the real data lives, an isolated slide cache, a tiny run.

Tests mirror the packages (``io/``, ``tiling/``, ``models/``, ...); anything that needs
a napari viewer lives in ``_qt/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """Return ``../shared/data`` (or ``$NAPARI_SEAL_SHARED_DATA``) when present."""
    env = os.environ.get("NAPARI_SEAL_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (her2st, Visium fixtures); skips when absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present (real her2st / Visium data)")
    return path


@pytest.fixture(scope="session")
def her2st_dir(shared_data: Path) -> Path:
    """``../shared/data/her2st/data`` (ST-cnts, ST-spotfiles, ST-imgs)."""
    path = shared_data / "her2st" / "data"
    if not path.is_dir():
        pytest.skip("her2st data is not present")
    return path


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the slide cache of the test session out of the user's home."""
    if "NAPARI_SEAL_CACHE" not in os.environ:
        os.environ["NAPARI_SEAL_CACHE"] = str(tmp_path_factory.mktemp("slide-cache"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A SEAL run on the bundled sample: test-vit encoder, cpu-smoke preset."""
    from napari_seal.io.hest import bundled_sample_path, load_sample
    from napari_seal.training.config import config_from_preset
    from napari_seal.training.trainer import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    config = config_from_preset("cpu-smoke", encoder="test-vit", max_steps=2)
    return train([load_sample(bundled_sample_path())], out=out, config=config)


@pytest.fixture(scope="session")
def tiny_store(tiny_run, tmp_path_factory):
    """The bundled slide embedded with ``tiny_run``."""
    from napari_seal.embedding.run import embed
    from napari_seal.io.hest import bundled_sample_path, load_sample
    from napari_seal.training.runs import load_run

    store = tmp_path_factory.mktemp("stores") / "tiny.zarr"
    return embed(load_sample(bundled_sample_path()), load_run(tiny_run), store)
