"""The ``color-stats`` baseline: 28 documented colour statistics per patch."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch

from napari_seal.models.baselines import _RGB_FROM_HED, FEATURE_NAMES, ColorStats
from napari_seal.models.factory import create_encoder
from napari_seal.models.inference import encode_images


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small CPU tests on a shared machine: one thread avoids OpenMP spin-waiting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _stats(img_uint8: np.ndarray) -> dict[str, float]:
    x = torch.from_numpy(img_uint8).permute(2, 0, 1)[None].float() / 255
    out = ColorStats()(x)[0].numpy()
    return dict(zip(FEATURE_NAMES, out.tolist(), strict=True))


def test_there_are_28_named_features_and_the_encoder_is_registered():
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES)) == 28
    enc = create_encoder("color-stats")
    assert (enc.embed_dim, enc.tile_px, enc.mpp) == (28, 224, 0.5)
    imgs = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    emb = encode_images(enc, imgs, batch_size=2)
    assert emb.shape == (3, 28)
    assert np.isfinite(emb).all()
    direct = ColorStats()(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255)
    np.testing.assert_allclose(emb, direct.numpy(), rtol=1e-5, atol=1e-6)


def test_uniform_colour_patch():
    rgb = (200, 100, 150)
    s = _stats(np.full((32, 32, 3), rgb, np.uint8))
    h, sat, val = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    for c, v in zip("rgb", rgb, strict=True):
        for stat in ("mean", "p10", "p50", "p90"):
            assert s[f"{c}_{stat}"] == pytest.approx(v / 255, abs=1e-6)
        assert s[f"{c}_std"] == pytest.approx(0, abs=1e-6)
    assert s["hue_circmean"] == pytest.approx(h, abs=1e-5)
    assert s["hue_circstd"] == pytest.approx(0, abs=1e-3)
    assert (s["sat_mean"], s["val_mean"]) == pytest.approx((sat, val), abs=1e-6)
    assert s["tissue_fraction"] == 1.0
    white = _stats(np.full((8, 8, 3), 255, np.uint8))
    assert white["tissue_fraction"] == 0.0
    assert white["hema_mean"] == pytest.approx(0, abs=1e-6)


def test_percentiles_and_spreads_match_numpy():
    img = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    s = _stats(img)
    for ci, c in enumerate("rgb"):
        ch = img[..., ci].astype(np.float64) / 255
        for p in (10, 50, 90):
            assert s[f"{c}_p{p}"] == pytest.approx(np.percentile(ch, p), abs=1e-5)
        assert s[f"{c}_std"] == pytest.approx(ch.std(), abs=1e-5)


def test_hue_mean_is_circular():
    img = np.zeros((2, 2, 3), np.uint8)
    for j, hue in enumerate((0.95, 0.05)):  # magenta-red and orange-red
        img[:, j] = np.round(np.array(colorsys.hsv_to_rgb(hue, 1.0, 1.0)) * 255)
    s = _stats(img)
    assert min(s["hue_circmean"], 1 - s["hue_circmean"]) < 0.01  # not the linear 0.5
    assert s["hue_circstd"] == pytest.approx(0.05, abs=0.01)


def test_colour_deconvolution_recovers_stain_amounts():
    m = np.array(_RGB_FROM_HED)
    m = m / np.linalg.norm(m, axis=1, keepdims=True)
    conc = np.array([0.6, 0.3, 0.05])  # haematoxylin, eosin, DAB optical densities
    pixel = np.clip(np.round(255 * 10 ** (-(conc @ m))), 1, 255).astype(np.uint8)
    s = _stats(np.broadcast_to(pixel, (4, 4, 3)).copy())
    got = np.array([s["hema_mean"], s["eosin_mean"], s["dab_mean"]])
    np.testing.assert_allclose(got, conc, atol=0.01)  # 8-bit rounding


def test_real_her2st_spots_are_tissue_and_background_is_not(her2st_dir):
    pil = pytest.importorskip("PIL.Image")
    import pandas as pd

    spots = pd.read_csv(her2st_dir / "ST-spotfiles" / "C2_selection.tsv", sep="\t")
    spots = spots[spots["selected"] == 1].iloc[::40]  # a handful of spots
    with pil.open(her2st_dir / "ST-imgs" / "C" / "C2" / "5714_HE_BT_C2.jpg") as im:
        im.draft("RGB", (im.width // 4, im.height // 4))  # fast DCT-domain 1/4 decode
        scale = im.width / 9274
        arr = np.asarray(im.convert("RGB"))
    half = int(round(81 * scale))  # 112 um patch = ~163 px at ~0.69 um/px
    patches = []
    for x, y in zip(spots["pixel_x"] * scale, spots["pixel_y"] * scale, strict=True):
        cx, cy = int(round(x)), int(round(y))
        patches.append(arr[cy - half : cy + half, cx - half : cx + half])
    background = arr[: 2 * half, : 2 * half]  # slide corner, outside the tissue
    emb = encode_images(create_encoder("color-stats"), np.stack([*patches, background]))
    tissue = emb[:, IDX["tissue_fraction"]]
    assert np.median(tissue[:-1]) > 0.5
    assert tissue[-1] < 0.2
    assert (emb[:-1, IDX["hema_mean"]] > emb[-1, IDX["hema_mean"]]).mean() > 0.8
