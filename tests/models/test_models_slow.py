"""Full-size foundation-model round trips (slow: GBs of RAM; one model at a time).

Run with ``pytest -m slow tests/test_models_slow.py``. Each test builds the exact
architecture with random weights, writes it as safetensors and as a ``torch.save`` file,
loads both back through ``create_encoder(name, weights=FILE)`` and checks the outputs
are identical. The source module is freed before loading, so peak memory is about two
copies of the weights (~9 GB for the 1.1 B-parameter models). Uses CUDA for the forward
pass when available.
"""

from __future__ import annotations

import gc

import pytest
import torch
from safetensors.torch import save_file

from napari_seal.models.factory import build_module, create_encoder
from napari_seal.models.registry import get_encoder_spec

GIANTS = [
    "uni",
    "phikon-v2",
    "virchow",
    "virchow2",
    "uni2-h",
    "h-optimus-0",
    "h-optimus-1",
    "gigapath",
]


def _random_module(name: str) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(0)
    module = build_module(name, meta=True).to_empty(device="cpu")
    with torch.no_grad():
        for pname, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(
                1 + 0.1 * noise if p.ndim == 1 and "norm" in pname else 0.02 * noise
            )
    return module.eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", GIANTS)
def test_giant_round_trip(name, tmp_path):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = get_encoder_spec(name)
    module = _random_module(name)
    n = sum(p.numel() for p in module.parameters()) / 1e6
    assert n == pytest.approx(spec.params_m, rel=0.002)
    x = torch.rand(2, 3, spec.tile_px, spec.tile_px, device=device)
    state = module.state_dict()
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.bin")
    with torch.no_grad():
        ref = module.to(device)(x).cpu()
    del module, state
    gc.collect()
    assert ref.shape == (2, spec.embed_dim)
    assert torch.isfinite(ref).all()
    for file in ("w.safetensors", "w.bin"):
        enc = create_encoder(name, weights=tmp_path / file, device=device)
        with torch.no_grad():
            out = enc.module(x).cpu()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        del enc
        gc.collect()
