"""Key conversions: Hugging Face Dinov2Model (Phikon-v2) -> timm; input transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_seal.errors import BadInputError, WeightsError
from napari_seal.models.factory import build_module
from napari_seal.models.registry import get_encoder_spec
from napari_seal.models.transforms import TileTransform
from napari_seal.models.vit import from_hf_dinov2
from napari_seal.models.weights import adapt_state_dict, diff_state_dict


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small CPU tests on a shared machine: one thread avoids OpenMP spin-waiting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_CLASSIC = {
    "q_proj": "attention.attention.query",
    "k_proj": "attention.attention.key",
    "v_proj": "attention.attention.value",
    "o_proj": "attention.output.dense",
}


def _to_classic_names(state):
    """transformers>=5 names -> the names of the published (2024) Phikon-v2 file."""
    out = {}
    for k, v in state.items():
        for new, old in _CLASSIC.items():
            k = k.replace(f"attention.{new}.", f"{old}.")
        out[k] = v
    return out


def test_hf_dinov2_conversion_reproduces_transformers_output():
    transformers = pytest.importorskip("transformers")
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    cfg = transformers.Dinov2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        mlp_ratio=4,
        patch_size=16,
        image_size=64,
        layerscale_value=0.5,
    )
    hf = transformers.Dinov2Model(cfg).eval()
    with torch.no_grad():  # make LayerNorm/LayerScale non-trivial
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = VisionTransformer(
        img_size=64,
        patch_size=16,
        embed_dim=64,
        depth=2,
        num_heads=4,
        init_values=1e-5,
        num_classes=0,
        global_pool="token",
    ).eval()
    hf_state = hf.state_dict()
    for state in (hf_state, _to_classic_names(hf_state)):
        ours.load_state_dict(from_hf_dinov2(state), strict=True)
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            ref = hf(pixel_values=x).last_hidden_state[:, 0]
            torch.testing.assert_close(ours(x), ref, rtol=1e-4, atol=1e-5)


def test_phikon_v2_file_layout_fits_the_registry_entry():
    """The published Dinov2Model key set converts onto the full-size module."""
    module = build_module("phikon-v2", meta=True)
    own = module.state_dict()
    hf = {
        "embeddings.cls_token": own["cls_token"],
        "embeddings.mask_token": own["cls_token"][0],
        "embeddings.position_embeddings": own["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": own["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": own["patch_embed.proj.bias"],
        "layernorm.weight": own["norm.weight"],
        "layernorm.bias": own["norm.bias"],
    }
    for i in range(24):
        b = f"blocks.{i}."
        layer = f"encoder.layer.{i}."
        for part in ("query", "key", "value"):
            hf[f"{layer}attention.attention.{part}.weight"] = own[
                b + "attn.qkv.weight"
            ][:1024]
            hf[f"{layer}attention.attention.{part}.bias"] = own[b + "attn.qkv.bias"][
                :1024
            ]
        for src, dst in [
            ("attention.output.dense", "attn.proj"),
            ("mlp.fc1", "mlp.fc1"),
            ("mlp.fc2", "mlp.fc2"),
            ("norm1", "norm1"),
            ("norm2", "norm2"),
        ]:
            hf[f"{layer}{src}.weight"] = own[f"{b}{dst}.weight"]
            hf[f"{layer}{src}.bias"] = own[f"{b}{dst}.bias"]
        hf[f"{layer}layer_scale1.lambda1"] = own[b + "ls1.gamma"]
        hf[f"{layer}layer_scale2.lambda1"] = own[b + "ls2.gamma"]
    converted = adapt_state_dict(get_encoder_spec("phikon-v2"), hf)
    assert not diff_state_dict(module, converted)
    hf["encoder.layer.0.unknown.weight"] = own["norm.weight"]
    with pytest.raises(WeightsError, match="no timm equivalent"):
        from_hf_dinov2(hf)


def test_transform_resizes_crops_and_normalises():
    t = TileTransform(4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    img = np.zeros((8, 16, 3), np.uint8)
    img[:, 6:10] = 255  # a white band in the centre columns
    out = t(img)
    assert out.shape == (1, 3, 4, 4)
    # shorter side 8 -> 4 (half), width 16 -> 8, centre crop keeps columns 2..5 of 8
    row = out[0, 0, 0].numpy()  # antialiased: [0.125, 0.875, 0.875, 0.125] -> +-1.5
    np.testing.assert_allclose(row, [-1.5, 1.5, 1.5, -1.5], atol=1e-5)
    same = np.full((2, 4, 4, 3), 128, np.uint8)
    np.testing.assert_allclose(t(same).numpy(), (128 / 255 - 0.5) / 0.25, atol=1e-6)
    assert t(torch.from_numpy(same)).shape == (2, 3, 4, 4)
    rgba = np.zeros((4, 4, 4), np.uint8)
    assert t(rgba).shape == (1, 3, 4, 4)
    with pytest.raises(BadInputError, match="RGB"):
        t(np.zeros((4, 4), np.uint8))


def test_gigapath_transform_enlarges_then_crops_like_its_card():
    spec = get_encoder_spec("gigapath")
    t = TileTransform(
        spec.tile_px,
        spec.mean,
        spec.std,
        resize_px=spec.resize_px,
        interpolation=spec.interpolation,
    )
    img = np.zeros((224, 224, 3), np.uint8)
    img[:16] = 255  # a white border strip: cropped away after the 256 px resize
    out = t(img)
    assert out.shape == (1, 3, 224, 224)
    white = (1 - spec.mean[0]) / spec.std[0]
    top_rows = out[0, 0, :1].mean().item()
    assert top_rows == pytest.approx(white, abs=0.05)
    assert out[0, 0, 10].mean().item() < white - 1  # rows 0-15 became 0-2 after crop
