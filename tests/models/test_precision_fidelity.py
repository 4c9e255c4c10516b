"""bf16 vs fp32 embeddings of real her2st tiles with the default encoder (issue 14).

Runs on every machine: where the CPU has no native bf16 the bf16 pass is emulated
(several times slower), so it embeds only a few dozen spot patches.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def her2st_patches():
    """48 spot-centred 224 px patches at 0.5 um/px of the bundled her2st section C2."""
    from napari_seal.io.hest import bundled_sample_path, load_sample
    from napari_seal.tiling.grid import spot_patches

    sample = load_sample(bundled_sample_path())
    keep = np.linspace(0, sample.adata.n_obs - 1, 48).round().astype(int)
    return np.ascontiguousarray(spot_patches(sample)[keep])


@pytest.fixture(scope="module")
def default_encoder():
    from napari_seal.models.factory import create_encoder

    return create_encoder("default")


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
def test_bf16_matches_fp32_on_real_tiles(
    her2st_patches, default_encoder, memory_format
):
    from napari_seal.models.inference import encode_images

    assert her2st_patches.shape == (48, 224, 224, 3)
    kw = {"batch_size": 16, "memory_format": memory_format}
    fp32 = encode_images(default_encoder, her2st_patches, precision="fp32", **kw)
    bf16 = encode_images(default_encoder, her2st_patches, precision="bf16", **kw)
    assert np.isfinite(bf16).all()
    assert not np.array_equal(fp32, bf16)  # bf16 really ran
    cos = _cosine(fp32, bf16)
    assert cos.mean() >= 0.999, (cos.mean(), cos.min())
    assert cos.min() >= 0.995, cos.min()
    # the tiles differ from each other far more than bf16 moves any one of them
    between = _cosine(fp32, np.roll(fp32, 1, axis=0)).mean()
    assert 1 - between > 20 * (1 - cos.mean())


def test_channels_last_fp32_equals_contiguous(her2st_patches, default_encoder):
    from napari_seal.models.inference import encode_images

    tiles = her2st_patches[:16]
    a = encode_images(
        default_encoder, tiles, precision="fp32", memory_format="contiguous"
    )
    b = encode_images(
        default_encoder, tiles, precision="fp32", memory_format="channels_last"
    )
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
