"""Vision-transformer builders (timm) and key conversions for the registry.

* ``build_timm``: ``timm.create_model(spec.timm_name, pretrained=False, **kwargs)``
  exactly as ``reference/encoders.md`` gives the kwargs (weights are never fetched
  from a hub).
* :class:`ClsMeanViT`: a timm ``VisionTransformer`` whose output is
  ``cat(CLS, mean(patch tokens))`` where the patch tokens exclude the CLS and register
  tokens (Virchow: tokens ``[1:]``; Virchow2 and H0-mini: tokens ``[5:]``). It is built
  with the same arguments as the named timm model, so its state-dict keys are identical
  to the model card's weight files.
* Phikon-v2 is a DINOv2 ViT-L/16 published in the Hugging Face ``Dinov2Model`` layout.
  napari-seal builds it with timm (``vit_large_patch16_224``, LayerScale 1e-5, CLS
  output after the final LayerNorm: the same computation, LayerNorm eps 1e-6, exact
  GELU) so that LoRA targets ``attn.qkv``/``attn.proj``/``mlp.fc1``/``mlp.fc2`` are the
  same as for every other ViT, and converts the weight file's keys with
  :func:`from_hf_dinov2` (no transformers import needed).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from napari_seal.errors import WeightsError

__all__ = [
    "TIMM_ARCH_ARGS",
    "ClsMeanViT",
    "build_cls_mean_vit",
    "build_timm",
    "from_hf_dinov2",
    "is_hf_dinov2_layout",
    "resolve_kwargs",
]

#: Constructor arguments of the timm model names used with :class:`ClsMeanViT`
#: (copied from the timm model definitions; a test checks the key/shape layout against
#: ``timm.create_model`` so a timm change is caught).
TIMM_ARCH_ARGS: dict[str, dict[str, Any]] = {
    "vit_huge_patch14_224": {
        "patch_size": 14,
        "embed_dim": 1280,
        "depth": 32,
        "num_heads": 16,
    },
    "vit_base_patch14_reg4_dinov2": {
        "patch_size": 14,
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "init_values": 1e-5,
        "reg_tokens": 4,
        "no_embed_class": True,
    },
}


def resolve_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Replace layer names (``"SwiGLUPacked"``, ``"SiLU"``) by the classes."""
    from timm.layers import SwiGLUPacked

    layers = {
        "SwiGLUPacked": SwiGLUPacked,
        "SiLU": torch.nn.SiLU,
        "GELU": torch.nn.GELU,
    }
    out = dict(kwargs)
    for key in ("mlp_layer", "act_layer"):
        if isinstance(out.get(key), str):
            out[key] = layers[out[key]]
    return out


def build_timm(spec) -> torch.nn.Module:
    """Build ``spec.timm_name`` with ``spec.timm_kwargs`` and random weights."""
    import timm

    return timm.create_model(
        spec.timm_name, pretrained=False, **resolve_kwargs(spec.timm_kwargs)
    )


class ClsMeanViT(VisionTransformer):
    """timm ViT whose output is ``cat(CLS, mean(patch tokens))`` (2 x embed_dim).

    Patch tokens are the tokens after the CLS and register tokens
    (``num_prefix_tokens``), taken after the final LayerNorm, as the Virchow and H0-mini
    model cards compute their embeddings.
    """

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:  # noqa: FBT001, FBT002 - timm's signature
        """Pool normalised tokens ``(B, N, D)`` into ``(B, 2D)``."""
        del pre_logits
        return torch.cat([x[:, 0], x[:, self.num_prefix_tokens :].mean(dim=1)], dim=-1)


def build_cls_mean_vit(spec) -> ClsMeanViT:
    """Build a :class:`ClsMeanViT` with the arguments of ``spec.timm_name`` + kwargs."""
    args = {**TIMM_ARCH_ARGS[spec.timm_name], **resolve_kwargs(spec.timm_kwargs)}
    return ClsMeanViT(**args)


def is_hf_dinov2_layout(state: dict) -> bool:
    """Whether ``state`` uses the Hugging Face ``Dinov2Model`` names."""
    return "embeddings.cls_token" in state


_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_HF_RENAME = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "attention.o_proj.weight": "attn.proj.weight",
    "attention.o_proj.bias": "attn.proj.bias",
}
# q, k, v in both the classic (attention.attention.query) and the newer names (q_proj)
_HF_QKV = {
    "attention.attention.query": 0,
    "attention.attention.key": 1,
    "attention.attention.value": 2,
    "attention.q_proj": 0,
    "attention.k_proj": 1,
    "attention.v_proj": 2,
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
#: HF keys dropped on purpose: the masked-image-modelling token, unused at inference.
HF_DINOV2_DROPPED = ("embeddings.mask_token",)


def from_hf_dinov2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a Hugging Face ``Dinov2Model`` state dict to timm ViT names.

    ``query``/``key``/``value`` (or ``q_proj``/``k_proj``/``v_proj``) are concatenated
    in that order into ``attn.qkv``; ``layer_scale{1,2}.lambda1`` become
    ``ls{1,2}.gamma``; ``layernorm`` becomes ``norm``; ``embeddings.mask_token`` is
    dropped. Any other key is an error (it would not be loaded).
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], list[torch.Tensor | None]] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key in HF_DINOV2_DROPPED:
            continue
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        m = _HF_LAYER.match(key)
        if not m:
            unknown.append(key)
            continue
        idx, rest = int(m[1]), m[2]
        if rest in _HF_RENAME:
            out[f"blocks.{idx}.{_HF_RENAME[rest]}"] = value
            continue
        base, _, param = rest.rpartition(".")
        if base in _HF_QKV and param in ("weight", "bias"):
            qkv.setdefault((idx, param), [None, None, None])[_HF_QKV[base]] = value
            continue
        unknown.append(key)
    for (idx, param), parts in qkv.items():
        if any(p is None for p in parts):
            msg = (
                f"block {idx} of this DINOv2 file lacks query, key or value {param}; "
                "the file is incomplete, download it again"
            )
            raise WeightsError(msg)
        out[f"blocks.{idx}.attn.qkv.{param}"] = torch.cat(parts, dim=0)
    if unknown:
        msg = (
            f"{len(unknown)} keys of this DINOv2 (Hugging Face) file have no timm "
            f"equivalent (first: {unknown[:5]}); it is not a plain Dinov2Model file"
        )
        raise WeightsError(msg)
    return out
