"""Shared test fixtures: where the real data lives, an isolated slide cache."""

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


pytest_plugins = ["widget_fixtures"]
