"""Weight files holding NaN or inf are refused with a WeightsError naming the tensor
(issue 13)."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file

from napari_seal.errors import WeightsError
from napari_seal.models.factory import create_encoder
from napari_seal.models.registry import get_builder, get_encoder_spec
from napari_seal.models.weights import load_state_dict_file, load_weights_strict


def _random_test_vit_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(13)
    module = get_builder("test-vit")(get_encoder_spec("test-vit"))
    return {k: torch.randn_like(v) if v.is_floating_point() else v.clone()
            for k, v in module.state_dict().items()}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_non_finite_weight_file_is_refused(tmp_path, value, suffix):
    state = _random_test_vit_state()
    key = next(k for k in state if k.endswith("attn.qkv.weight"))
    state[key] = torch.full_like(state[key], value)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    for load in (
        lambda: load_state_dict_file(path),
        lambda: create_encoder("test-vit", weights=path),
    ):
        with pytest.raises(WeightsError) as info:
            load()
        msg = str(info.value)
        assert key in msg
        assert str(path) in msg
        assert "download it again" in msg
        n = state[key].numel()
        assert (f"{n} NaN" in msg) == math.isnan(value)
        assert (f"{n} infinite" in msg) == math.isinf(value)


def test_one_nan_among_finite_values_is_refused_in_memory_too():
    state = _random_test_vit_state()
    key = next(k for k in state if k.endswith("mlp.fc1.bias"))
    state[key][3] = math.nan
    with pytest.raises(WeightsError, match=r"1 NaN and 0 infinite"):
        create_encoder("test-vit", weights=state)
    module = get_builder("test-vit")(get_encoder_spec("test-vit"))
    with pytest.raises(WeightsError, match=key.replace(".", r"\.")):
        load_weights_strict(module, state)


def test_finite_random_weights_still_load(tmp_path):
    state = _random_test_vit_state()
    path = tmp_path / "ok.safetensors"
    save_file(state, str(path))
    encoder = create_encoder("test-vit", weights=path)
    x = encoder.transform(torch.zeros(1, encoder.tile_px, encoder.tile_px, 3,
                                      dtype=torch.uint8))
    assert torch.isfinite(encoder.module(x)).all()
