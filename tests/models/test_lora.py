"""LoRA through peft: target selection, freezing, save/load, merge."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from napari_seal.errors import BadInputError, CheckpointError
from napari_seal.models.factory import build_module, create_encoder
from napari_seal.models.lora import (
    ADAPTER_FILE,
    SPEC_FILE,
    LoraSpec,
    apply_lora,
    default_lora_spec,
    load_adapters,
    lora_target_names,
    merge_lora,
    save_adapters,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small CPU tests on a shared machine: one thread avoids OpenMP spin-waiting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


VIT_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def _lora_params(module, names, r=8):
    mods = dict(module.named_modules())
    return sum(r * (mods[n].weight[0].numel() + mods[n].weight.shape[0]) for n in names)


def _randomise_lora_b(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def test_spec_defaults_and_json_round_trip():
    spec = LoraSpec()
    assert (spec.r, spec.alpha, spec.dropout, spec.use_rslora) == (8, 8.0, 0.15, False)
    assert spec.target_modules == VIT_TARGETS
    assert LoraSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(CheckpointError, match="unknown LoRA settings"):
        LoraSpec.from_dict({"rank": 4})
    assert default_lora_spec("conch").last_n_blocks == 1
    assert default_lora_spec("uni2-h").last_n_blocks == 3
    assert default_lora_spec("default", r=4).r == 4


@pytest.mark.parametrize(
    ("name", "blocks", "n_params"),
    [
        ("conch", ["trunk.blocks.11"], 98_304),  # seal_method.md: ~98.3k
        ("uni2-h", ["blocks.21", "blocks.22", "blocks.23"], 589_824),  # ~590k
    ],
)
def test_targets_match_the_released_seal_checkpoints(name, blocks, n_params):
    module = build_module(name, meta=True)
    names = lora_target_names(module, default_lora_spec(name))
    assert names == [f"{b}.{t}" for b in blocks for t in VIT_TARGETS]
    assert _lora_params(module, names) == n_params


def test_efficientnet_targets_are_pointwise_convs_of_last_blocks_and_head():
    module = build_module("default", meta=True)
    names = lora_target_names(module, default_lora_spec("default"))
    assert names == [
        "blocks.5.3.conv_pw",
        "blocks.5.3.conv_pwl",
        "blocks.6.0.conv_pw",
        "blocks.6.0.conv_pwl",
        "conv_head",
    ]
    mods = dict(module.named_modules())
    assert all(mods[n].kernel_size == (1, 1) for n in names)
    three = lora_target_names(module, default_lora_spec("default", last_n_blocks=3))
    assert "blocks.5.2.conv_pw" in three
    assert len(three) == 7


def test_apply_lora_freezes_the_base_and_trains_only_adapters():
    enc = create_encoder("test-vit")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        base_out = enc.module(x)
    base_before = {k: v.clone() for k, v in enc.module.state_dict().items()}
    model = apply_lora(enc.module, default_lora_spec(enc))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert all(("lora_A" in n) or ("lora_B" in n) for n in trainable)
    assert len(trainable) == 2 * 12  # last 3 of 6 blocks x 4 layers x (A, B)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), base_out)  # B starts at zero
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    after = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in model.state_dict().items()
        if "lora_" not in k
    }
    for key, value in base_before.items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), base_out, atol=1e-6)


@pytest.mark.parametrize("name", ["test-vit", "default"])
def test_merged_output_equals_unmerged(name):
    enc = create_encoder(name)
    model = apply_lora(enc.module, default_lora_spec(enc)).eval()
    _randomise_lora_b(model)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        unmerged = model(x)
        merged_module = merge_lora(model).eval()
        merged = merged_module(x)
    assert not any("lora" in k for k in merged_module.state_dict())
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)


def test_save_and_load_adapters_round_trip(tmp_path):
    enc = create_encoder("test-vit")  # random weights: keep a copy of this base
    base_copy = copy.deepcopy(enc.module)
    model = apply_lora(enc.module, default_lora_spec(enc, last_n_blocks=2)).eval()
    _randomise_lora_b(model, seed=3)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    out = save_adapters(model, tmp_path / "adapters", encoder_name="test-vit")
    assert (out / ADAPTER_FILE).is_file()
    meta = json.loads((out / SPEC_FILE).read_text())
    assert meta["encoder"] == "test-vit"
    assert len(meta["targets"]) == 8
    assert meta["spec"]["last_n_blocks"] == 2
    loaded = load_adapters(base_copy, out).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref, rtol=0, atol=0)


def test_adapters_refuse_another_architecture(tmp_path):
    enc = create_encoder("test-vit")
    model = apply_lora(enc.module, default_lora_spec(enc))
    save_adapters(model, tmp_path / "a", encoder_name="test-vit")
    with pytest.raises(CheckpointError, match="target layers this encoder lacks"):
        load_adapters(create_encoder("default").module, tmp_path / "a")
    (tmp_path / "a" / ADAPTER_FILE).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_adapters(create_encoder("test-vit").module, tmp_path / "a")


def test_lora_on_colour_statistics_is_a_clear_error():
    with pytest.raises(BadInputError, match="cannot be fine-tuned"):
        apply_lora(
            create_encoder("color-stats").module, default_lora_spec("color-stats")
        )
