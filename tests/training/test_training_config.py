"""TrainConfig validation, presets and the device default."""

from __future__ import annotations

import json

import pytest

from napari_seal.errors import TrainingConfigError
from napari_seal.training.config import (
    PRESETS,
    TrainConfig,
    config_from_preset,
    preset_for_device,
)


def test_defaults_follow_seal_and_round_trip_through_json():
    cfg = TrainConfig()
    assert (cfg.weight_decay, cfg.tau, cfg.seed, cfg.kl_weight) == (0.2, 0.05, 42, 0.0)
    assert (cfg.clip_weight, cfg.recon_vae_weight, cfg.recon_img_weight) == (1, 1, 1)
    assert (cfg.pearson_weight, cfg.mse_weight, cfg.recon_scale) == (0.05, 5.0, 1.0)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    custom = TrainConfig(include_genes="ERBB2,ESR1", lora={"r": 4}, vae_hidden=[64, 32])
    assert custom.include_genes == ("ERBB2", "ESR1")
    assert custom.vae_hidden == (64, 32)
    assert TrainConfig.from_dict(json.loads(json.dumps(custom.to_dict()))) == custom


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("batch_size", 1, "batch_size=1 is invalid; allowed: an integer >= 2"),
        ("epochs", 0, "epochs=0"),
        ("lr", 0.0, "lr=0.0 is invalid; allowed: a number in (0.0, 1.0]"),
        ("augment", "extreme", "none | soft | hard"),
        ("precision", "fp16", "bf16 | fp32"),
        ("eval_fraction", 0.95, "eval_fraction"),
        ("pearson_reduction", "max", "sum | mean"),
        ("batch_size", 3.5, "batch_size=3.5"),
        ("max_steps", 0, "max_steps=0"),
    ],
)
def test_bad_values_name_field_value_and_range(field, value, needle):
    with pytest.raises(TrainingConfigError) as err:
        TrainConfig(**{field: value})
    assert needle in str(err.value)


def test_lora_keys_and_weights_path(tmp_path, monkeypatch):
    with pytest.raises(TrainingConfigError, match="lora=.*keys among"):
        TrainConfig(lora={"rank": 4})
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(weights="w.safetensors")
    assert cfg.weights == str(tmp_path / "w.safetensors")


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(TrainingConfigError, match="unknown TrainConfig field.*bogus"):
        TrainConfig.from_dict({"bogus": 1})


def test_presets():
    assert {"paper", "24GB", "80GB", "cpu", "cpu-smoke"} <= set(PRESETS)
    paper = config_from_preset("paper")
    assert (paper.epochs, paper.batch_size, paper.lr, paper.n_genes) == (
        10,
        384,
        1e-4,
        2000,
    )
    cpu = config_from_preset("cpu", epochs=None, seed=7)
    assert (cpu.batch_size, cpu.lr, cpu.n_genes, cpu.epochs, cpu.seed) == (
        64,
        1e-3,
        256,
        30,
        7,
    )
    assert cpu.preset == "cpu"
    assert cpu.precision == "bf16"
    smoke = config_from_preset("cpu-smoke")
    assert smoke.max_steps is not None
    assert smoke.max_steps <= 5
    with pytest.raises(TrainingConfigError, match="unknown preset 'gpu'"):
        config_from_preset("gpu")


def test_preset_for_device():
    assert preset_for_device("cpu") == "cpu"
    assert preset_for_device("mps") == "cpu"
    import torch

    if not torch.cuda.is_available():
        assert preset_for_device(None) == "cpu"
        assert preset_for_device("cuda") == "cpu"
