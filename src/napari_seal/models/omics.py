"""SEAL's omics encoder: a VAE with planar flows on a fixed gene panel.

Architecture (``reference/seal_method.md`` 2.4): an MLP encoder
``n_genes -> 1024 -> 512`` (Linear, BatchNorm, ReLU, Dropout), two heads ``fc_mu`` and
``fc_logvar`` to the image embedding dimension, a reparameterised sample, three planar
normalising flows and a mirrored decoder ``latent -> 512 -> 1024 -> n_genes`` with no
output activation.

Deviation from the official release, on purpose: the official module samples
``z = mu + eps * sigma`` even in eval mode, so its omics embeddings are random. Here the
sample is only drawn in training mode; :meth:`GeneVAE.encode` (and eval-mode
:meth:`GeneVAE.forward`) push ``mu`` through the flows, so a query embeds the same way
every time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GeneVAE", "PlanarFlow", "VAEOutput"]


class PlanarFlow(nn.Module):
    """One planar flow ``z' = z + u_hat * tanh(w^T z + b)`` (Rezende & Mohamed 2015).

    ``u_hat`` is ``u`` projected so that ``w^T u_hat >= -1``, which keeps the map
    invertible; the forward pass returns ``log|det dz'/dz|`` per sample.

    Parameters
    ----------
    dim
        Dimension of ``z``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.u = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))
        self.w = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.zeros(1))

    def u_hat(self) -> torch.Tensor:
        """Return ``u`` constrained so that ``w^T u_hat >= -1`` (invertibility)."""
        wu = torch.dot(self.w, self.u)
        m_wu = -1.0 + F.softplus(wu)
        return self.u + (m_wu - wu) * self.w / (self.w.pow(2).sum() + 1e-12)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the flow to ``z`` of shape ``(B, dim)``; return ``(z', log_det)``."""
        u_hat = self.u_hat()
        lin = z @ self.w + self.b  # (B,)
        h = torch.tanh(lin)
        z_new = z + u_hat.unsqueeze(0) * h.unsqueeze(1)
        psi = (1.0 - h.pow(2)).unsqueeze(1) * self.w.unsqueeze(0)  # (B, dim)
        det = 1.0 + psi @ u_hat
        log_det = torch.log(det.abs() + 1e-8)
        return z_new, log_det


@dataclass
class VAEOutput:
    """What :meth:`GeneVAE.forward` returns.

    Attributes
    ----------
    z
        Embedding after the flows ``(B, latent_dim)``: the omics side of the CLIP loss.
    recon
        Decoded expression ``(B, n_genes)`` (same space as the input).
    mu, logvar
        Posterior parameters ``(B, latent_dim)``.
    z0
        The pre-flow sample (``mu`` in eval mode).
    log_det
        Sum of the flows' ``log|det J|`` per sample ``(B,)``.
    """

    z: torch.Tensor
    recon: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z0: torch.Tensor
    log_det: torch.Tensor


class GeneVAE(nn.Module):
    """Variational auto-encoder with planar flows mapping a gene panel to an embedding.

    Parameters
    ----------
    n_genes
        Panel size (input and output width).
    latent_dim
        Embedding dimension; SEAL uses the image encoder's embedding dimension so the
        two live in one space.
    hidden
        Encoder widths (the decoder mirrors them).
    n_flows
        Number of planar flows (3 in SEAL).
    dropout
        Dropout after each encoder block and before the decoder's last layer
        (``vae_dropout`` / ``dec_dropout``, 0 in SEAL).

    Examples
    --------
    >>> vae = GeneVAE(32, 8).eval()
    >>> vae.encode(torch.zeros(4, 32)).shape
    torch.Size([4, 8])
    """

    def __init__(
        self,
        n_genes: int,
        latent_dim: int,
        *,
        hidden: tuple[int, ...] = (1024, 512),
        n_flows: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_genes = int(n_genes)
        self.latent_dim = int(latent_dim)
        self.hidden = tuple(int(h) for h in hidden)
        enc: list[nn.Module] = []
        width = self.n_genes
        for h in self.hidden:
            enc += [
                nn.Linear(width, h),
                nn.BatchNorm1d(h),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            width = h
        self.encoder = nn.Sequential(*enc)
        self.fc_mu = nn.Linear(width, self.latent_dim)
        self.fc_logvar = nn.Linear(width, self.latent_dim)
        self.flows = nn.ModuleList(PlanarFlow(self.latent_dim) for _ in range(n_flows))
        dec: list[nn.Module] = []
        width = self.latent_dim
        rev = list(reversed(self.hidden))
        for i, h in enumerate(rev):
            dec += [nn.Linear(width, h), nn.ReLU()]
            if i == len(rev) - 1:
                dec.append(nn.Dropout(dropout))
            width = h
        dec.append(nn.Linear(width, self.n_genes))
        self.decoder = nn.Sequential(*dec)

    def _flow(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for flow in self.flows:
            z, ld = flow(z)
            log_det = log_det + ld
        return z, log_det

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)`` for expression ``x`` of shape ``(B, n_genes)``."""
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def forward(self, x: torch.Tensor) -> VAEOutput:
        """Encode, sample (training mode only), flow and decode ``x``."""
        mu, logvar = self.posterior(x)
        if self.training:
            eps = torch.randn_like(mu)
            z0 = mu + eps * torch.exp(0.5 * logvar)
        else:
            z0 = mu
        z, log_det = self._flow(z0)
        return VAEOutput(
            z=z, recon=self.decoder(z), mu=mu, logvar=logvar, z0=z0, log_det=log_det
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic embedding: the flows applied to ``mu`` (no sampling)."""
        mu, _ = self.posterior(x)
        z, _ = self._flow(mu)
        return z

    @staticmethod
    def kl_divergence(out: VAEOutput) -> torch.Tensor:
        """Single-sample estimate of ``KL(q(z_K|x) || N(0, I))`` with flows, batch mean.

        ``log q(z_K) = log N(z_0; mu, sigma) - sum log|det J|``; the prior is evaluated
        at ``z_K``. Used only when ``TrainConfig.kl_weight > 0`` (SEAL trains with 0).
        """
        var = torch.exp(out.logvar)
        log_q0 = -0.5 * (
            math.log(2 * math.pi) + out.logvar + (out.z0 - out.mu).pow(2) / var
        ).sum(1)
        log_p = -0.5 * (math.log(2 * math.pi) + out.z.pow(2)).sum(1)
        return (log_q0 - out.log_det - log_p).mean()
