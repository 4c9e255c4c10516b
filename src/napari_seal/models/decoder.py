"""Image-side heads of SEAL: the image-embedding -> gene decoder.

``ImgEmbDecoder`` (``reference/seal_method.md`` 2.3): ``Linear(D, 512) -> ReLU ->
Dropout(0) -> Linear(512, G) -> ReLU``. It predicts the panel's log-normalised
expression directly from the image embedding; the ReLU keeps predictions
non-negative like ``log1p`` values.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ImgEmbDecoder"]


class ImgEmbDecoder(nn.Module):
    """Predict gene expression from an image embedding.

    Parameters
    ----------
    embed_dim
        Image embedding dimension ``D``.
    n_genes
        Panel size ``G``.
    hidden
        Hidden width (512 in SEAL).
    dropout
        Dropout between the layers (0 in SEAL).

    Examples
    --------
    >>> head = ImgEmbDecoder(16, 5)
    >>> head(torch.zeros(2, 16)).shape
    torch.Size([2, 5])
    """

    def __init__(
        self, embed_dim: int, n_genes: int, hidden: int = 512, *, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.embed_dim = int(embed_dim)
        self.n_genes = int(n_genes)
        self.net = nn.Sequential(
            nn.Linear(self.embed_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, self.n_genes),
            nn.ReLU(),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """Map ``(B, D)`` embeddings to ``(B, G)`` non-negative expression."""
        return self.net(emb)
