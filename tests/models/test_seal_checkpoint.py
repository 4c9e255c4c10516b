"""Official SEAL release checkpoints, written here in the released key format."""

from __future__ import annotations

import copy

import pytest
import torch

from napari_seal.errors import CheckpointError
from napari_seal.models.factory import build_module, create_encoder
from napari_seal.models.lora import (
    LoraSpec,
    apply_lora,
    default_lora_spec,
    lora_target_names,
)
from napari_seal.models.seal_checkpoint import (
    adapted_blocks,
    backbone_from_filename,
    check_lora_shapes,
    load_official_omics,
    load_official_seal,
    parse_seal_vision_keys,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small CPU tests on a shared machine: one thread avoids OpenMP spin-waiting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
PREFIX = "module.encoder."


def _seal_model(blocks=(3, 4, 5), seed=0):
    """A test-vit base + LoRA on ``blocks`` with non-zero adapters (as SEAL trains)."""
    torch.manual_seed(seed)
    base = create_encoder("test-vit").module
    base_copy = copy.deepcopy(base)
    names = [f"blocks.{b}.{t}" for b in blocks for t in TARGETS]
    model = apply_lora(base, LoraSpec(), target_names=names).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn_like(p))
    return model, base_copy


def _official_state(model, *, full=True):
    """The state dict as the SEAL release stores it (DDP ``module.`` + peft names)."""
    state = {}
    for k, v in model.state_dict().items():
        if full or "lora_" in k:
            state[PREFIX + k] = v.clone()
    gen = torch.Generator().manual_seed(
        1
    )  # SEAL's image->gene decoder (64 -> 512 -> 30)
    state["module.img_decoder.net.0.weight"] = torch.randn(512, 64, generator=gen)
    state["module.img_decoder.net.0.bias"] = torch.randn(512, generator=gen)
    state["module.img_decoder.net.3.weight"] = torch.randn(30, 512, generator=gen)
    state["module.img_decoder.net.3.bias"] = torch.randn(30, generator=gen)
    return state


@pytest.fixture
def x():
    return torch.rand(3, 3, 64, 64)


def test_full_checkpoint_applies_every_adapter(tmp_path, x):
    model, _ = _seal_model(blocks=(1, 4, 5))  # not the last-N default: read from keys
    with torch.no_grad():
        ref = model(x)
    path = tmp_path / "seal_testvit_vision.pth"
    torch.save(_official_state(model), path)
    seal = load_official_seal(path, backbone="test-vit")
    assert seal.kind == "full"
    assert seal.adapted_blocks == [1, 4, 5]
    assert seal.target_names == sorted(
        f"blocks.{b}.{t}" for b in (1, 4, 5) for t in TARGETS
    )
    assert seal.lora_spec.r == 8
    assert seal.lora_spec.alpha == 8.0
    assert len(seal.heads) == 4
    assert seal.decoder is not None
    emb = torch.rand(2, 64)
    h = torch.relu(
        emb @ seal.heads["img_decoder.net.0.weight"].T
        + seal.heads["img_decoder.net.0.bias"]
    )
    expected = torch.relu(
        h @ seal.heads["img_decoder.net.3.weight"].T
        + seal.heads["img_decoder.net.3.bias"]
    )
    with torch.no_grad():
        torch.testing.assert_close(seal.decoder(emb), expected)
    with torch.no_grad():
        out = seal.encoder.module(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert not any("lora" in k for k in seal.encoder.module.state_dict())  # merged


def test_adapters_only_checkpoint_needs_and_uses_base_weights(tmp_path, x):
    model, base = _seal_model()
    with torch.no_grad():
        ref = model(x)
    path = tmp_path / "seal_testvit_vision.pth"
    torch.save(_official_state(model, full=False), path)
    with pytest.raises(CheckpointError, match="holds only the LoRA adapters"):
        load_official_seal(path, backbone="test-vit")
    torch.save(base.state_dict(), tmp_path / "base.bin")
    seal = load_official_seal(
        path, backbone="test-vit", base_weights=tmp_path / "base.bin", merge=False
    )
    assert seal.kind == "adapters"
    assert seal.adapted_blocks == [3, 4, 5]
    with torch.no_grad():
        torch.testing.assert_close(seal.encoder.module(x), ref, rtol=1e-5, atol=1e-6)


def test_base_weights_must_match_the_checkpoint(tmp_path):
    model, _ = _seal_model()
    path = tmp_path / "seal_testvit_vision.pth"
    torch.save(_official_state(model), path)
    other = create_encoder("test-vit").module  # other random base
    torch.save(other.state_dict(), tmp_path / "other.bin")
    with pytest.raises(CheckpointError, match="do not match base_weights"):
        load_official_seal(
            path, backbone="test-vit", base_weights=tmp_path / "other.bin"
        )


def test_missing_and_unexpected_keys_are_named(tmp_path):
    model, _ = _seal_model()
    state = _official_state(model)
    key = PREFIX + "base_model.model.blocks.4.mlp.fc2.lora_B.default.weight"
    del state[key]
    torch.save(state, tmp_path / "seal_testvit_vision.pth")
    with pytest.raises(
        CheckpointError, match=r"lora_B missing for \['blocks.4.mlp.fc2'\]"
    ):
        load_official_seal(tmp_path / "seal_testvit_vision.pth", backbone="test-vit")

    state = _official_state(model)
    bogus = PREFIX + "base_model.model.blocks.9.attn.qkv.lora_A.default.weight"
    state[bogus] = torch.zeros(8, 64)
    state[bogus.replace("lora_A", "lora_B")] = torch.zeros(192, 8)
    torch.save(state, tmp_path / "seal_testvit_vision.pth")
    with pytest.raises(CheckpointError, match=r"blocks\.9\.attn\.qkv"):
        load_official_seal(tmp_path / "seal_testvit_vision.pth", backbone="test-vit")

    state = _official_state(model)
    del state[PREFIX + "base_model.model.blocks.0.norm1.weight"]
    torch.save(state, tmp_path / "seal_testvit_vision.pth")
    with pytest.raises(CheckpointError, match=r"blocks\.0\.norm1\.weight"):
        load_official_seal(tmp_path / "seal_testvit_vision.pth", backbone="test-vit")


def test_uni2_key_format_on_the_meta_device():
    """SEAL-UNI2: 12 adapters on blocks 21-23, read from the keys, all applied."""
    module = build_module("uni2-h", meta=True)
    mods = dict(module.named_modules())
    state = {}
    for b in (21, 22, 23):
        for t in TARGETS:
            w = mods[f"blocks.{b}.{t}"].weight
            key = f"module.encoder.base_model.model.blocks.{b}.{t}"
            state[f"{key}.lora_A.default.weight"] = torch.empty(
                8, w.shape[1], device="meta"
            )
            state[f"{key}.lora_B.default.weight"] = torch.empty(
                w.shape[0], 8, device="meta"
            )
    keys = parse_seal_vision_keys(state)
    assert not keys.base
    assert keys.rank == 8
    assert len(keys.layers) == 12
    assert adapted_blocks(keys.layers, r"^blocks\.(\d+)\.") == [(21,), (22,), (23,)]
    check_lora_shapes(module, keys)
    n = sum(keys.lora_a[k].numel() + keys.lora_b[k].numel() for k in keys.layers)
    assert n == 589_824
    # the official loader builds LoRA from partial_blocks=1: block 23 only
    official = lora_target_names(module, default_lora_spec("uni2-h", last_n_blocks=1))
    assert official == [f"blocks.23.{t}" for t in TARGETS]
    assert set(keys.layers) - set(official)  # what strict=False would drop
    with pytest.raises(CheckpointError, match="do not exist in this backbone"):
        check_lora_shapes(build_module("conch", meta=True), keys)
    with pytest.raises(CheckpointError, match="do not fit their layers"):
        check_lora_shapes(
            build_module("uni", meta=True),
            parse_seal_vision_keys(
                {k.replace("blocks.21", "blocks.0"): v for k, v in state.items()}
            ),
        )


def test_backbone_names():
    assert backbone_from_filename("weights/univ2_SEAL/seal_univ2_vision.pth") == "univ2"
    assert backbone_from_filename("seal_conch_omics.pth") == "conch"
    assert backbone_from_filename("model.pth") is None


def test_omics_checkpoint_loads_into_gene_vae(tmp_path):
    omics = pytest.importorskip("napari_seal.models.omics")
    torch.manual_seed(0)
    vae = omics.GeneVAE(50, 16).eval()
    expr = torch.rand(4, 50)
    with torch.no_grad():
        ref = vae.encode(expr)
    torch.save(
        {f"module.{k}": v for k, v in vae.state_dict().items()},
        tmp_path / "seal_testvit_omics.pth",
    )
    loaded = load_official_omics(tmp_path / "seal_testvit_omics.pth")
    assert (loaded.n_genes, loaded.latent_dim) == (50, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(expr), ref)
    state = vae.state_dict()
    del state["fc_mu.bias"]
    torch.save(state, tmp_path / "broken_omics.pth")
    with pytest.raises(CheckpointError, match="fc_mu.bias"):
        load_official_omics(tmp_path / "broken_omics.pth")
