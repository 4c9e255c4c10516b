"""Session fixtures for widget tests: a tiny SEAL run and its embedding store."""

from __future__ import annotations

import pytest


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
    from napari_seal.embed import embed
    from napari_seal.io.hest import bundled_sample_path, load_sample
    from napari_seal.runs import load_run

    store = tmp_path_factory.mktemp("stores") / "tiny.zarr"
    return embed(load_sample(bundled_sample_path()), load_run(tiny_run), store)
