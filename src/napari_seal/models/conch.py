"""CONCH v1 vision tower, rebuilt offline from its published configuration.

Configuration (``conch_ViT-B-16.json`` as summarised in ``reference/encoders.md``):
embed_dim 512; vision image_size 448, patch 16; attentional pooling with 1 contrast
query and 256 caption queries. The trunk is the timm ``VisionTransformer`` with
``embed_dim=768, depth=12, num_heads=12, mlp_ratio=4, img_size=448, patch_size=16,
num_classes=0, dynamic_img_size=True`` and ``global_pool=""`` (all tokens, CLS
included, after the final LayerNorm, go to the poolers). SEAL feeds 224 px tiles: the
448 px position embedding is resampled to 14 x 14 by timm (``dynamic_img_size``).

Output = ``encode_image(x, proj_contrast=False, normalize=False)``:
``ln_contrast(attn_pool_contrast(trunk(x))[:, 0])``, 512-d.

Module (and expected weight-file) key layout, file keys prefixed with ``visual.``:

* ``trunk.*`` - timm ViT-B/16 keys (``trunk.blocks.{0..11}.attn.qkv.weight`` ...);
* ``attn_pool_contrast.query`` ``(1, 512)``, ``attn_pool_contrast.attn.*``
  (``nn.MultiheadAttention(512, 8, kdim=768, vdim=768)``: ``q_proj_weight``,
  ``k_proj_weight``, ``v_proj_weight``, ``in_proj_bias``, ``out_proj.weight``,
  ``out_proj.bias``), ``attn_pool_contrast.ln_q.*`` (512), ``attn_pool_contrast.ln_k.*``
  (768);
* ``ln_contrast.*`` (512);
* unused by the embedding, kept so the full ``visual.*`` set loads:
  ``proj_contrast`` ``(512, 512)``, ``attn_pool_caption.*`` (256 queries),
  ``ln_caption.*``.

A CONCH ``pytorch_model.bin`` also holds the text tower (``text.*``,
``text_decoder.*``, ``logit_scale``): :func:`select_visual` keeps the ``visual.*`` keys
and drops those. The caption pooler, ``ln_caption`` and ``proj_contrast`` are optional
in a file (they do not change the embedding); everything else is loaded strictly.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "OPTIONAL_PREFIXES",
    "AttentionalPooler",
    "ConchVision",
    "build_conch",
    "select_visual",
]

#: Module keys a weight file may omit (not used by the 512-d embedding).
OPTIONAL_PREFIXES = ("proj_contrast", "attn_pool_caption.", "ln_caption.")


class AttentionalPooler(nn.Module):
    """Cross-attention of learned queries over the trunk tokens.

    Parameters
    ----------
    d_model
        Query / output width (512).
    context_dim
        Token width of the trunk (768).
    n_head
        Attention heads.
    n_queries
        Number of learned queries.
    """

    def __init__(
        self, d_model: int, context_dim: int, *, n_head: int = 8, n_queries: int = 1
    ) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(n_queries, d_model))
        self.attn = nn.MultiheadAttention(
            d_model, n_head, kdim=context_dim, vdim=context_dim, batch_first=True
        )
        self.ln_q = nn.LayerNorm(d_model)
        self.ln_k = nn.LayerNorm(context_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pool ``(B, N, context_dim)`` tokens into ``(B, n_queries, d_model)``."""
        kv = self.ln_k(tokens)
        q = self.ln_q(self.query).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        out, _ = self.attn(q, kv, kv, need_weights=False)
        return out


class ConchVision(nn.Module):
    """CONCH v1 image encoder; ``forward`` gives the 512-d pre-projection embedding."""

    def __init__(
        self,
        *,
        embed_dim: int = 512,
        img_size: int = 448,
        n_queries_caption: int = 256,
        attn_pooler_heads: int = 8,
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.trunk = VisionTransformer(
            img_size=img_size,
            patch_size=16,
            embed_dim=768,
            depth=12,
            num_heads=12,
            mlp_ratio=4.0,
            num_classes=0,
            global_pool="",
            dynamic_img_size=True,
        )
        width = self.trunk.embed_dim
        self.attn_pool_contrast = AttentionalPooler(
            embed_dim, width, n_head=attn_pooler_heads, n_queries=1
        )
        self.ln_contrast = nn.LayerNorm(embed_dim)
        self.proj_contrast = nn.Parameter(
            width**-0.5 * torch.randn(embed_dim, embed_dim)
        )
        self.attn_pool_caption = AttentionalPooler(
            embed_dim, width, n_head=attn_pooler_heads, n_queries=n_queries_caption
        )
        self.ln_caption = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map normalised images ``(B, 3, H, W)`` to ``(B, 512)``."""
        tokens = self.trunk(x)
        pooled = self.attn_pool_contrast(tokens)[:, 0]
        return self.ln_contrast(pooled)


def build_conch(spec) -> ConchVision:
    """Registry builder: CONCH v1 vision tower with random weights."""
    del spec
    return ConchVision()


def select_visual(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep a CONCH file's ``visual.*`` keys (prefix removed); others pass unchanged.

    A file without any ``visual.`` key is returned as is (it is already in the module
    layout, e.g. saved from napari-seal).
    """
    if not any(k.startswith("visual.") for k in state):
        return state
    return {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
