"""Encoder registry: names, exact architectures, weight round trips, bad weights."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from napari_seal.errors import BadInputError, UnknownEncoderError, WeightsError
from napari_seal.models.factory import build_module, create_encoder
from napari_seal.models.registry import (
    get_encoder_spec,
    list_encoders,
    resolve_encoder_name,
)
from napari_seal.models.weights import load_state_dict_file


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small CPU tests on a shared machine: one thread avoids OpenMP spin-waiting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# reference/encoders.md: (params in millions, exact?, embedding size). "~" values are
# approximate in the reference and get a 2 % tolerance, exact ones 0.5 %.
ENCODERS_MD = {
    "vit-s": (21.7, True, 384),
    "vit-b": (85.8, True, 768),
    "uni": (303.4, True, 1024),
    "uni2-h": (681.4, True, 1536),
    "virchow": (631.0, False, 2560),
    "virchow2": (631.2, True, 2560),
    "h-optimus-0": (1134.8, True, 1536),
    "h-optimus-1": (1134.8, True, 1536),
    "gigapath": (1135.0, True, 1536),
    "conch": (90.0, False, 512),
    "phikon-v2": (300.0, False, 1024),
    "h0-mini": (None, False, 1536),  # count not given in the reference
    "default": (None, False, 1280),
    "test-vit": (0.3, False, 64),
    "color-stats": (0.0, True, 28),
}
NAMES = sorted(ENCODERS_MD)


@functools.lru_cache(maxsize=2)
def random_module(name: str, seed: int = 0) -> torch.nn.Module:
    """The architecture with cheap random weights (randn, not timm's slow init).

    Cached: callers must not modify the module.
    """
    gen = torch.Generator().manual_seed(seed)
    module = build_module(name, meta=True).to_empty(device="cpu")
    with torch.no_grad():
        for pname, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(
                1 + 0.1 * noise if p.ndim == 1 and "norm" in pname else 0.05 * noise
            )
        for bname, b in module.named_buffers():
            if bname.endswith("running_var"):
                b.fill_(1.0)
            elif b.is_floating_point() or bname.endswith("num_batches_tracked"):
                b.zero_()
    if name == "color-stats":  # non-persistent constant buffers: build for real
        module = build_module(name)
    return module.eval()


def test_registry_names_and_spec_fields():
    names = [s.name for s in list_encoders()]
    assert sorted(names) == NAMES
    for spec in list_encoders():
        assert spec.licence
        assert spec.weights_from
        assert spec.arch
        assert spec.dtype in ("fp32", "fp16", "bf16")
        assert len(spec.mean) == len(spec.std) == 3
        assert spec.tile_px * spec.mpp == pytest.approx(112.0)  # same field of view
        if spec.gated:
            assert spec.requires_weights
            assert "gated" in spec.weights_from
    assert [s.name for s in list_encoders("h-optimus-*")] == [
        "h-optimus-0",
        "h-optimus-1",
    ]
    assert get_encoder_spec("uni2-h").to_dict()["lora_targets"] == [
        "attn.qkv",
        "attn.proj",
        "mlp.fc1",
        "mlp.fc2",
    ]


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("uni2_h", "uni2-h"),
        ("univ2", "uni2-h"),
        ("UNI2-H", "uni2-h"),
        ("h0mini", "h0-mini"),
        ("phikonv2", "phikon-v2"),
        ("hoptimus0", "h-optimus-0"),
        ("test_vit", "test-vit"),
        ("prov-gigapath", "gigapath"),
        ("efficientnet-lite0", "default"),
    ],
)
def test_aliases(alias, name):
    assert resolve_encoder_name(alias) == name


def test_unknown_encoder_lists_valid_names():
    with pytest.raises(UnknownEncoderError) as info:
        create_encoder("uni3")
    msg = str(info.value)
    assert "uni3" in msg
    for name in NAMES:
        assert name in msg


def test_listing_the_registry_does_not_import_torch():
    code = (
        "import sys\nfrom napari_seal.models import list_encoders\n"
        "assert len(list_encoders()) == 15\n"
        "print(','.join(m for m in ('torch', 'timm', 'peft') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("name", NAMES)
def test_architecture_size_and_output_on_meta(name):
    """Parameter count and embedding size of every entry, built without memory."""
    spec = get_encoder_spec(name)
    module = build_module(name, meta=True)
    n = sum(p.numel() for p in module.parameters()) / 1e6
    ref, exact, dim = ENCODERS_MD[name]
    assert spec.embed_dim == dim
    assert n == pytest.approx(spec.params_m, rel=0.002, abs=0.001)
    if ref is not None:
        assert n == pytest.approx(ref, rel=0.005 if exact else 0.02, abs=0.01)
    x = torch.zeros(2, 3, spec.tile_px, spec.tile_px, device="meta")
    if name != "color-stats":
        assert tuple(module(x).shape) == (2, dim)


@pytest.mark.parametrize(
    ("name", "timm_name", "prefix"),
    [
        ("virchow2", "vit_huge_patch14_224", 5),
        ("virchow", "vit_huge_patch14_224", 1),
        ("h0-mini", "vit_base_patch14_reg4_dinov2", 5),
    ],
)
def test_cls_mean_models_have_the_timm_key_layout(name, timm_name, prefix):
    import timm

    from napari_seal.models.vit import resolve_kwargs

    spec = get_encoder_spec(name)
    ours = build_module(name, meta=True)
    with torch.device("meta"):
        ref = timm.create_model(
            timm_name, pretrained=False, **resolve_kwargs(spec.timm_kwargs)
        )
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert ours.num_prefix_tokens == prefix


def test_cls_mean_pooling_is_cls_plus_mean_of_patch_tokens():
    from napari_seal.models.vit import ClsMeanViT

    torch.manual_seed(0)
    m = ClsMeanViT(
        img_size=28,
        patch_size=14,
        embed_dim=16,
        depth=1,
        num_heads=2,
        reg_tokens=4,
        no_embed_class=True,
        num_classes=0,
        global_pool="",
    ).eval()
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        tokens = m.forward_features(x)  # (3, 1 + 4 + 4, 16)
        out = m(x)
    assert tokens.shape[1] == 9
    expected = torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=-1)
    torch.testing.assert_close(out, expected)


FAST = ["test-vit", "vit-s", "conch", "default", "color-stats", "h0-mini"]


@pytest.mark.parametrize("name", FAST)
def test_weights_round_trip_safetensors_and_bin(name, tmp_path):
    spec = get_encoder_spec(name)
    module = random_module(name)
    side = {"vit-s": 224, "h0-mini": 56}.get(name, 64)  # the others take any size
    x = torch.rand(2, 3, side, side)
    with torch.no_grad():
        ref = module(x)
    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.bin")
    for file in ("w.safetensors", "w.bin", None):
        enc = create_encoder(name, weights=tmp_path / file if file else state)
        assert enc.weights == (tmp_path / file if file else None)
        assert (enc.embed_dim, enc.tile_px, enc.mpp) == (
            spec.embed_dim,
            spec.tile_px,
            spec.mpp,
        )
        with torch.no_grad():
            out = enc.module(x)
        assert out.shape == (2, spec.embed_dim)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_foundation_models_need_a_weight_file():
    with pytest.raises(WeightsError, match="huggingface.co/MahmoodLab/UNI2-h"):
        create_encoder("uni2-h")
    enc = create_encoder("test-vit")  # no file needed
    assert enc.weights is None


def test_wrong_architecture_names_keys_and_suggests_the_right_encoder(tmp_path):
    state = random_module("vit-s").state_dict()
    torch.save(state, tmp_path / "vits.bin")
    with pytest.raises(WeightsError) as info:
        create_encoder("vit-b", weights=tmp_path / "vits.bin")
    msg = str(info.value)
    assert "150 shape mismatches" in msg
    assert "blocks.0.attn.qkv.weight file [1152, 384] vs model [2304, 768]" in msg
    assert "fits encoder 'vit-s'" in msg

    del state["blocks.11.mlp.fc2.bias"]
    state["extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "broken.bin")
    with pytest.raises(WeightsError) as info:
        create_encoder("vit-s", weights=tmp_path / "broken.bin")
    msg = str(info.value)
    assert "1 missing keys (first: blocks.11.mlp.fc2.bias)" in msg
    assert "1 unexpected keys (first: extra.weight)" in msg


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_code_executing_pickles_are_refused(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"weight": torch.zeros(2), "evil": _Evil(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with path.open("wb") as fh:
            pickle.dump(payload, fh)
    assert not marker.exists()
    with pytest.raises(WeightsError, match="refusing to load"):
        load_state_dict_file(path)
    with pytest.raises(WeightsError, match="refusing to load"):
        create_encoder("test-vit", weights=path)
    assert not marker.exists()


def test_checkpoint_wrappers_are_unwrapped(tmp_path):
    state = random_module("test-vit").state_dict()
    torch.save(
        {"epoch": 3, "model": {f"module.{k}": v for k, v in state.items()}},
        tmp_path / "ckpt.pth",
    )
    loaded = load_state_dict_file(tmp_path / "ckpt.pth")
    assert loaded.keys() == state.keys()
    create_encoder("test-vit", weights=tmp_path / "ckpt.pth")
    torch.save({"state_dict": state}, tmp_path / "sd.pth")
    assert load_state_dict_file(tmp_path / "sd.pth").keys() == state.keys()
    torch.save({"epoch": 3, "weights": state}, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="not tensors"):
        load_state_dict_file(tmp_path / "odd.pth")
    (tmp_path / "junk.bin").write_bytes(b"PK\x03\x04 truncated zip, not weights")
    with pytest.raises(WeightsError, match="cannot read"):
        load_state_dict_file(tmp_path / "junk.bin")
    with pytest.raises(WeightsError, match="does not exist"):
        load_state_dict_file(tmp_path / "absent.safetensors")


def test_conch_loads_the_visual_part_of_a_full_conch_file(tmp_path):
    module = random_module("conch")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = module(x)
    state = {
        f"visual.{k}": v
        for k, v in module.state_dict().items()
        if not k.startswith(("attn_pool_caption.", "ln_caption."))
    }
    state["text.token_embedding.weight"] = torch.zeros(10, 4)
    state["logit_scale"] = torch.zeros(())
    save_file(state, tmp_path / "conch.safetensors")
    enc = create_encoder("conch", weights=tmp_path / "conch.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(enc.module(x), ref, rtol=0, atol=0)
    del state["visual.ln_contrast.weight"]
    save_file(state, tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError, match="ln_contrast.weight"):
        create_encoder("conch", weights=tmp_path / "bad.safetensors")


def test_encoder_transform_and_encode_shapes():
    enc = create_encoder("test-vit")
    tile = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    x = enc.transform(tile)
    assert x.shape == (1, 3, 64, 64)
    assert x.dtype == torch.float32
    big = np.repeat(np.repeat(tile, 2, axis=0), 2, axis=1)  # 128 px -> resized to 64
    assert enc.transform(big).shape == (1, 3, 64, 64)
    emb = enc.encode(np.stack([tile, tile, big[:64, :64]]), batch_size=2)
    assert emb.shape == (3, 64)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(emb[0], emb[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(BadInputError, match="uint8"):
        enc.transform(tile.astype(np.float32))
