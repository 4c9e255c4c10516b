"""Omics VAE (planar flows, deterministic inference) and the image->gene decoder."""

from __future__ import annotations

import math

import pytest
import torch

from napari_seal.models.decoder import ImgEmbDecoder
from napari_seal.models.omics import GeneVAE, PlanarFlow


def test_vae_architecture_matches_seal():
    vae = GeneVAE(2000, 1280)
    enc = [type(m).__name__ for m in vae.encoder]
    assert enc == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2
    assert vae.encoder[0].in_features == 2000
    assert vae.encoder[0].out_features == 1024
    assert vae.encoder[4].out_features == 512
    assert vae.fc_mu.out_features == vae.fc_logvar.out_features == 1280
    assert len(vae.flows) == 3
    lin = [m for m in vae.decoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [
        (1280, 512),
        (512, 1024),
        (1024, 2000),
    ]
    assert isinstance(vae.decoder[-1], torch.nn.Linear)  # no output activation


def test_vae_eval_is_deterministic_and_train_samples():
    torch.manual_seed(0)
    vae = GeneVAE(30, 8, hidden=(32, 16))
    x = torch.randn(6, 30)
    vae.train()
    a, b = vae(x), vae(x)
    assert not torch.allclose(a.z, b.z)  # reparameterised sample in training
    assert torch.allclose(a.mu, b.mu)
    vae.eval()
    c, d = vae(x), vae(x)
    assert torch.equal(c.z, d.z)
    assert torch.equal(c.z0, c.mu)
    assert torch.equal(vae.encode(x), c.z)
    assert c.recon.shape == (6, 30)


def test_encode_uses_mu_even_in_train_mode():
    torch.manual_seed(1)
    vae = GeneVAE(10, 4, hidden=(8,), n_flows=2).train()
    x = torch.randn(5, 10)
    assert torch.equal(vae.encode(x), vae.encode(x))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planar_flow_log_det_matches_autograd_jacobian(seed):
    torch.manual_seed(seed)
    flow = PlanarFlow(3).double()
    with torch.no_grad():
        flow.u.mul_(5.0)  # make the map clearly non-trivial
    for _ in range(4):
        z = torch.randn(3, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], z)
        _, expected = torch.linalg.slogdet(jac)
        got = flow(z[None])[1][0]
        assert float(got) == pytest.approx(float(expected), abs=1e-6)


def test_planar_flow_invertibility_constraint():
    flow = PlanarFlow(4)
    with torch.no_grad():
        flow.w.copy_(torch.tensor([1.0, 2.0, 0.0, -1.0]))
        flow.u.copy_(-10.0 * flow.w)  # w.u = -60: not invertible without the fix
    assert float(torch.dot(flow.w, flow.u_hat())) >= -1.0 - 1e-5
    z = torch.randn(50, 4)
    _, log_det = flow(z)
    assert torch.isfinite(log_det).all()


def test_kl_estimate_matches_closed_form_without_flows():
    torch.manual_seed(0)
    vae = GeneVAE(5, 3, hidden=(8,), n_flows=0).train()
    x = torch.randn(1, 5).repeat(20000, 1)
    vae.encoder.eval()  # identical rows: keep BN in inference mode
    out = vae(x)
    mu, logvar = out.mu[0], out.logvar[0]
    closed = 0.5 * float((mu.pow(2) + logvar.exp() - 1 - logvar).sum())
    est = float(GeneVAE.kl_divergence(out))
    assert est == pytest.approx(closed, abs=0.05 + 0.05 * closed)


def test_img_decoder_shape_and_relu_output():
    head = ImgEmbDecoder(16, 7)
    kinds = [type(m).__name__ for m in head.net]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU"]
    assert head.net[0].out_features == 512
    y = head(torch.randn(9, 16) * 10)
    assert y.shape == (9, 7)
    assert float(y.min()) >= 0.0
    assert not math.isnan(float(y.sum()))


def test_training_init_of_the_heads():
    from napari_seal.training._state import init_heads
    from napari_seal.training.config import TrainConfig

    vae, head = GeneVAE(6, 4, hidden=(8, 8)), ImgEmbDecoder(4, 6)
    mean = torch.arange(6, dtype=torch.float32)
    init_heads(vae, head, mean, TrainConfig())
    assert torch.equal(vae.decoder[-1].bias, mean)
    assert torch.equal(head.net[3].bias, mean)
    assert torch.all(vae.fc_logvar.bias == -6.0)  # posterior sd ~0.05 at the start
    vae.train()
    out = vae(torch.randn(5, 6))
    assert float((out.z0 - out.mu).abs().max()) < 0.5
    vae2 = GeneVAE(6, 4, hidden=(8, 8))
    before = vae2.fc_logvar.bias.clone()
    init_heads(
        vae2,
        ImgEmbDecoder(4, 6),
        mean,
        TrainConfig(vae_logvar_init=None, init_decoder_bias=False),
    )
    assert torch.equal(vae2.fc_logvar.bias, before)
    assert not torch.equal(vae2.decoder[-1].bias, mean)
