"""SEAL's training losses: CLIP InfoNCE and the ``barlow_std_mse`` gene reconstruction.

``L = w_clip * CLIP(z_img, z_gene) + w_vae * recon(VAE(x), x)
+ w_img * recon(dec(z_img), x)``
with all weights 1 (``reference/seal_method.md`` 3).

- CLIP: symmetric InfoNCE on L2-normalised embeddings at a fixed temperature
  (tau = 0.05). Under ``torch.distributed`` the embeddings of every rank are gathered
  (:func:`napari_seal.training.ddp.all_gather_with_grad`) so each rank scores its
  spots against the global batch, as open_clip's ``gather_features`` with
  ``local_loss=False``; each rank computes the same global loss.
- Reconstruction (``BarlowMSELoss(lambd=0, mse_norm=True)`` in the official code):
  ``pearson_weight * sum_g (1 - C_gg)^2 + mse_weight * MSE(z(pred), z(target))`` where
  ``C_gg`` is the batch Pearson correlation of gene ``g`` between prediction and target
  and ``z(.)`` z-scores with the training set's per-gene mean and std. The sum over
  genes is the official reduction (``reduction="sum"``); ``"mean"`` divides it by the
  panel size (see docs/training.md for the magnitudes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "batch_pearson",
    "clip_loss",
    "in_batch_accuracy",
    "recon_loss",
    "standardized_mse",
]


def clip_loss(
    img: torch.Tensor,
    gene: torch.Tensor,
    *,
    tau: float = 0.05,
    gather: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric CLIP InfoNCE between paired image and gene embeddings.

    Parameters
    ----------
    img, gene
        ``(B, D)`` embeddings; row ``i`` of both is one spot.
    tau
        Fixed temperature.
    gather
        Gather negatives across ranks when ``torch.distributed`` is initialised with
        more than one process (gradients flow back to every rank's local rows).

    Returns
    -------
    ``(loss, logits)``: the mean of the image->gene and gene->image cross-entropies, and
    the ``(N, N)`` image-to-gene logits of the (global) batch.
    """
    img = F.normalize(img.float(), dim=-1)
    gene = F.normalize(gene.float(), dim=-1)
    if gather:
        from napari_seal.training.ddp import all_gather_with_grad

        img = all_gather_with_grad(img)
        gene = all_gather_with_grad(gene)
    logits = img @ gene.t() / tau
    labels = torch.arange(logits.shape[0], device=logits.device)
    loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    return loss, logits


def in_batch_accuracy(logits: torch.Tensor) -> float:
    """Fraction of image rows whose best-scoring gene column is their own pair."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    return float((logits.argmax(dim=1) == labels).float().mean())


def batch_pearson(
    pred: torch.Tensor, target: torch.Tensor, *, eps: float = 1e-5
) -> torch.Tensor:
    """Per-gene Pearson correlation across the batch, shape ``(G,)``.

    Each column is centred and divided by ``sqrt(var + eps)`` (biased variance, as a
    non-affine BatchNorm does in Barlow Twins), so a gene constant in the batch scores
    0 instead of NaN.
    """
    p = pred.float()
    t = target.float()
    p = (p - p.mean(0)) / torch.sqrt(p.var(0, unbiased=False) + eps)
    t = (t - t.mean(0)) / torch.sqrt(t.var(0, unbiased=False) + eps)
    return (p * t).mean(0)


def standardized_mse(
    pred: torch.Tensor, target: torch.Tensor, *, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """MSE after z-scoring prediction and target with training-set gene statistics."""
    return F.mse_loss((pred.float() - mean) / std, (target.float() - mean) / std)


def recon_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    mean: torch.Tensor,
    std: torch.Tensor,
    pearson_weight: float = 0.05,
    mse_weight: float = 5.0,
    reduction: str = "sum",
) -> tuple[torch.Tensor, dict[str, float]]:
    """SEAL's ``barlow_std_mse`` gene reconstruction loss.

    Parameters
    ----------
    pred, target
        ``(B, G)`` predicted and measured log-normalised expression.
    mean, std
        ``(G,)`` training-set per-gene mean and std (``GenePanel``).
    pearson_weight, mse_weight
        0.05 and 5.0 in SEAL.
    reduction
        ``"sum"`` (SEAL: sum over genes of ``(1 - r_g)^2``) or ``"mean"``.

    Returns
    -------
    ``(loss, parts)`` with ``parts = {"pearson": ..., "mse": ...}`` (unweighted).
    """
    r = batch_pearson(pred, target)
    pen = (1.0 - r).pow(2)
    pearson = pen.sum() if reduction == "sum" else pen.mean()
    mse = standardized_mse(pred, target, mean=mean, std=std)
    loss = pearson_weight * pearson + mse_weight * mse
    return loss, {"pearson": float(pearson.detach()), "mse": float(mse.detach())}
