"""Batch inference: batching, precision rules, modes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from napari_seal.errors import BadInputError
from napari_seal.models.factory import create_encoder, wrap_module
from napari_seal.models.inference import encode_images, inference_precision


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


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize(
    ("dtype", "device", "expected_native", "expected_emulated"),
    [
        (torch.float32, "cpu", "bf16", "fp32"),
        (torch.float16, "cpu", "bf16", "fp32"),
        (torch.bfloat16, "cpu", "bf16", "fp32"),
        (torch.float16, "mps", "fp32", "fp32"),
    ],
)
def test_auto_precision_follows_the_cpu(
    monkeypatch, native, dtype, device, expected_native, expected_emulated
):
    import napari_seal.models.precision as precision

    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: native)
    enc = SimpleNamespace(dtype=dtype, device=torch.device("cpu"))
    want = expected_native if native else expected_emulated
    assert inference_precision(enc, device) == want
    assert inference_precision(enc, device, precision="fp32") == "fp32"


@pytest.mark.parametrize(
    ("dtype", "bf16_ok", "expected"),
    [
        (torch.float16, True, "fp16"),
        (torch.bfloat16, True, "bf16"),
        (torch.float32, True, "bf16"),
        (torch.bfloat16, False, "fp16"),
        (torch.float32, False, "fp32"),
    ],
)
def test_auto_precision_on_cuda(monkeypatch, dtype, bf16_ok, expected):
    import napari_seal.models.precision as precision

    monkeypatch.setattr(precision, "_cuda_bf16", lambda dev: bf16_ok)
    enc = SimpleNamespace(dtype=dtype, device=torch.device("cpu"))
    assert inference_precision(enc, "cuda") == expected


def test_colour_statistics_always_run_fp32():
    enc = create_encoder("color-stats")
    assert inference_precision(enc, "cpu") == "fp32"


def test_bad_precision_requests_are_typed_errors(monkeypatch):
    import napari_seal.models.precision as precision

    enc = SimpleNamespace(dtype=torch.float32, device=torch.device("cpu"))
    with pytest.raises(BadInputError, match="fp32"):
        inference_precision(enc, "cpu", precision="fp8")
    with pytest.raises(BadInputError, match="only supported on CUDA"):
        inference_precision(enc, "cpu", precision="fp16")
    monkeypatch.setattr(precision, "_cuda_bf16", lambda dev: False)
    with pytest.raises(BadInputError, match="does not support bf16"):
        inference_precision(enc, "cuda", precision="bf16")
    with pytest.raises(BadInputError, match="memory format"):
        precision.plan_inference(create_encoder("test-vit"), memory_format="nhwc")


def test_memory_format_follows_the_architecture():
    from napari_seal.models.precision import plan_inference

    default = create_encoder("default")
    vit = create_encoder("test-vit")
    assert plan_inference(default, precision="fp32").memory_format == "channels_last"
    assert plan_inference(vit, precision="fp32").memory_format == "contiguous"
    plan = plan_inference(vit, precision="fp32", memory_format="channels_last")
    assert plan.memory_format == "channels_last"
    assert plan.to_dict()["precision"] == "fp32"


def test_cpu_flags_decide_native_bf16(monkeypatch):
    import napari_seal.models.precision as precision

    precision.cpu_native_bf16.cache_clear()
    try:
        monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
        assert precision.cpu_native_bf16() is False
        precision.cpu_native_bf16.cache_clear()
        monkeypatch.setattr(
            precision, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"})
        )
        assert precision.cpu_native_bf16() is True
        precision.cpu_native_bf16.cache_clear()
        monkeypatch.setenv("NAPARI_SEAL_CPU_BF16", "0")
        assert precision.cpu_native_bf16() is False
    finally:
        precision.cpu_native_bf16.cache_clear()


def test_bf16_probe_is_cached_per_machine(monkeypatch, tmp_path):
    import napari_seal.models.precision as precision

    monkeypatch.setenv("NAPARI_SEAL_CACHE", str(tmp_path))
    first = precision.bf16_probe()
    assert first["fp32_gflops"] > 0
    assert first["bf16_gflops"] > 0
    assert (tmp_path / "hardware.json").is_file()
    monkeypatch.setattr(precision, "_matmul_gflops", lambda *a, **k: 1 / 0)
    assert precision.bf16_probe() == first  # read back, not measured again


def test_batching_does_not_change_results(tiles):
    enc = create_encoder("test-vit")
    one = encode_images(enc, tiles, batch_size=1, precision="fp32")
    many = encode_images(enc, tiles, batch_size=64, precision="fp32")
    assert one.shape == (7, 64)
    assert one.dtype == np.float32
    np.testing.assert_allclose(one, many, rtol=1e-4, atol=1e-5)
    as_list = encode_images(enc, list(tiles[:3]), batch_size=2, precision="fp32")
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


def test_cpu_autocasts_what_the_plan_says_and_restores_the_mode(tiles):
    probe = _Probe()
    enc = wrap_module("test-vit", probe)
    enc.embed_dim = 4
    probe.train()
    for precision, seen in [("bf16", torch.bfloat16), ("fp32", torch.float32)]:
        out = encode_images(enc, tiles, batch_size=4, precision=precision)
        assert out.dtype == np.float32
        assert probe.seen[-1] == seen
    assert probe.training  # restored after the call
    assert not any(probe.grad_enabled)


def test_session_pads_compiled_batches_and_reports_timing(tiles, monkeypatch):
    """A compiled session sees only full batches (static shape); warm-up is timed."""
    from napari_seal.models.inference import InferenceSession

    probe = _Probe()
    shapes = []

    def fake_compile(module, **kwargs):
        assert kwargs == {"dynamic": False}

        def run(x):
            shapes.append(tuple(x.shape))
            return module(x)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    enc = wrap_module("test-vit", probe)
    enc.embed_dim = 4
    session = InferenceSession(enc, batch_size=4, precision="fp32", compile=True)
    assert session.warm_up() > 0
    out = session(tiles)  # 7 tiles: 4 + 3 padded to 4
    assert out.shape == (7, 4)
    assert {s[0] for s in shapes} == {4}
    eager = encode_images(enc, tiles, batch_size=4, precision="fp32")
    np.testing.assert_allclose(out, eager, rtol=1e-5, atol=1e-6)
    info = session.info()
    assert info["compile"] is True
    assert info["compile_s"] == info["warmup_s"] > 0


def test_allocator_keeps_large_freed_blocks_mapped():
    """After tuning, a conv's 50 MB activations reuse freed memory, not new pages."""
    import resource

    from napari_seal.models.precision import tune_cpu_allocator

    if not tune_cpu_allocator():
        pytest.skip("not glibc on Linux: nothing to tune")
    conv = nn.Conv2d(3, 32, 3, padding=1)
    x = torch.rand(8, 3, 224, 224)
    pages = 8 * 32 * 224 * 224 * 4 // 4096  # one output
    with torch.inference_mode():
        conv(x).relu().mean()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            conv(x).relu().mean()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # untuned glibc mmaps and unmaps every block: ~9 x pages for these 3 passes
    assert faults < 3 * pages, (faults, pages)
