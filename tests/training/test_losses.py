"""CLIP InfoNCE and the barlow_std_mse reconstruction loss against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_seal.training.losses import (
    batch_pearson,
    clip_loss,
    in_batch_accuracy,
    recon_loss,
    standardized_mse,
)


def _np_clip(img, gene, tau):
    img = img / np.linalg.norm(img, axis=1, keepdims=True)
    gene = gene / np.linalg.norm(gene, axis=1, keepdims=True)
    logits = img @ gene.T / tau

    def xent(lg):
        lse = np.log(np.exp(lg).sum(1))
        return float(np.mean(lse - np.diag(lg)))

    return 0.5 * (xent(logits) + xent(logits.T))


def test_clip_loss_by_hand_two_spots():
    # unit vectors at 0 and 90 degrees: cosines 1 on the diagonal, 0 off it
    img = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    gene = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    loss, logits = clip_loss(img, gene, tau=0.5)
    # each row: -log(e^2 / (e^2 + e^0))
    expected = -np.log(np.e**2 / (np.e**2 + 1.0))
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert torch.allclose(logits, torch.tensor([[2.0, 0.0], [0.0, 2.0]]))


def test_clip_loss_matches_numpy_and_is_symmetric():
    rng = np.random.default_rng(0)
    img, gene = rng.normal(size=(7, 5)), rng.normal(size=(7, 5))
    loss, _ = clip_loss(torch.tensor(img), torch.tensor(gene), tau=0.05)
    assert float(loss) == pytest.approx(_np_clip(img, gene, 0.05), rel=1e-5)
    swapped, _ = clip_loss(torch.tensor(gene), torch.tensor(img), tau=0.05)
    assert float(swapped) == pytest.approx(float(loss), rel=1e-6)


def test_clip_loss_is_scale_invariant_and_rewards_alignment():
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(16, 8)), dtype=torch.float32)
    aligned, logits = clip_loss(x, 3.0 * x)
    assert float(aligned) < 0.05
    assert in_batch_accuracy(logits) == 1.0
    shuffled, logits = clip_loss(
        x, x[torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    )
    assert float(shuffled) > 1.0
    assert in_batch_accuracy(logits) < 0.5


def test_batch_pearson_matches_corrcoef():
    rng = np.random.default_rng(2)
    p, t = rng.normal(size=(40, 6)), rng.normal(size=(40, 6))
    t[:, 0] = 2 * p[:, 0] + 1  # perfect correlation
    r = batch_pearson(torch.tensor(p), torch.tensor(t), eps=0.0).numpy()
    expected = [np.corrcoef(p[:, g], t[:, g])[0, 1] for g in range(6)]
    np.testing.assert_allclose(r, expected, rtol=1e-5, atol=1e-6)
    # a gene constant in the batch gives 0, not NaN
    t[:, 1] = 5.0
    r = batch_pearson(torch.tensor(p), torch.tensor(t))
    assert float(r[1]) == 0.0


def test_recon_loss_by_hand():
    pred = torch.tensor([[1.0, 0.0], [2.0, 1.0], [3.0, 2.0]])
    target = torch.tensor([[1.0, 2.0], [2.0, 1.0], [3.0, 0.0]])
    mean = torch.tensor([2.0, 1.0])
    std = torch.tensor([1.0, 2.0])
    # gene 0: r = 1; gene 1: r = -1 -> sum (1-r)^2 = 0 + 4
    # z-scored differences: gene 0 all 0; gene 1: (0-2)/2, (1-1)/2, (2-0)/2 = -1, 0, 1
    # MSE over 6 entries = 2/6
    loss, parts = recon_loss(
        pred, target, mean=mean, std=std, pearson_weight=0.05, mse_weight=5.0
    )
    assert parts["pearson"] == pytest.approx(4.0, rel=1e-4)
    assert parts["mse"] == pytest.approx(2 / 6, rel=1e-6)
    assert float(loss) == pytest.approx(0.05 * 4.0 + 5.0 * 2 / 6, rel=1e-4)
    loss_mean, parts_mean = recon_loss(
        pred, target, mean=mean, std=std, reduction="mean"
    )
    assert parts_mean["pearson"] == pytest.approx(2.0, rel=1e-4)
    assert float(loss_mean) == pytest.approx(0.05 * 2.0 + 5.0 * 2 / 6, rel=1e-4)


def test_standardized_mse_uses_given_statistics():
    pred = torch.tensor([[4.0]])
    target = torch.tensor([[0.0]])
    got = standardized_mse(
        pred, target, mean=torch.tensor([10.0]), std=torch.tensor([2.0])
    )
    assert float(got) == pytest.approx(4.0)


def test_recon_loss_gradients_flow():
    pred = torch.randn(8, 5, requires_grad=True)
    target = torch.randn(8, 5)
    loss, _ = recon_loss(pred, target, mean=torch.zeros(5), std=torch.ones(5))
    loss.backward()
    assert pred.grad is not None
    assert torch.isfinite(pred.grad).all()
    assert float(pred.grad.abs().sum()) > 0
