"""Batch inference: batching, precision rules, modes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from napari_seal.errors import BadInputError
from napari_seal.models.inference import encode_images, inference_precision
from napari_seal.models.registry import create_encoder, wrap_module


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Small CPU tests on a shared machine: one thread avoids OpenMP spin-waiting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiles():
    return np.random.default_rng(0).integers(0, 256, (7, 64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("dtype", "device", "expected"),
    [
        (torch.float32, "cpu", "fp32"),
        (torch.float16, "cpu", "fp32"),
        (torch.bfloat16, "cpu", "bf16"),
        (torch.float16, "cuda", "fp16"),
        (torch.bfloat16, "cuda", "bf16"),
        (torch.float32, "cuda", "fp32"),
        (torch.float16, "mps", "fp32"),
    ],
)
def test_precision_rules(dtype, device, expected):
    enc = SimpleNamespace(dtype=dtype, device=torch.device("cpu"))
    assert inference_precision(enc, device) == expected


def test_batching_does_not_change_results(tiles):
    enc = create_encoder("test-vit")
    one = encode_images(enc, tiles, batch_size=1)
    many = encode_images(enc, tiles, batch_size=64)
    assert one.shape == (7, 64)
    assert one.dtype == np.float32
    np.testing.assert_allclose(one, many, rtol=1e-4, atol=1e-5)
    as_list = encode_images(enc, list(tiles[:3]), batch_size=2)
    np.testing.assert_allclose(as_list, many[:3], rtol=1e-4, atol=1e-5)
    assert encode_images(enc, tiles[:0]).shape == (0, 64)
    assert encode_images(enc, tiles[0]).shape == (1, 64)
    with pytest.raises(BadInputError, match="batch_size"):
        encode_images(enc, tiles, batch_size=0)


class _Probe(nn.Module):
    """Records the dtype its layer computes in; output (B, 4)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.seen: list[torch.dtype] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x):
        y = self.fc(x.mean((2, 3)))
        self.seen.append(y.dtype)
        self.grad_enabled.append(torch.is_grad_enabled())
        return y


def test_cpu_autocasts_only_bf16_and_restores_the_mode(tiles):
    probe = _Probe()
    enc = wrap_module("test-vit", probe)
    enc.embed_dim = 4
    probe.train()
    for dtype, seen in [
        (torch.bfloat16, torch.bfloat16),
        (torch.float16, torch.float32),
        (torch.float32, torch.float32),
    ]:
        enc.dtype = dtype
        out = encode_images(enc, tiles, batch_size=4)
        assert out.dtype == np.float32
        assert probe.seen[-1] == seen
    assert probe.training  # restored after the call
    assert not any(probe.grad_enabled)
