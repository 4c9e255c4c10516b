"""Encoders, weights, LoRA and SEAL heads.

``import napari_seal.models`` is light: names are imported on first access, and the
registry table (:func:`list_encoders`, :class:`EncoderSpec`) needs no torch.

>>> from napari_seal.models import list_encoders
>>> "default" in [spec.name for spec in list_encoders()]
True
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Encoder": "napari_seal.models.factory",
    "EncoderSpec": "napari_seal.models.registry",
    "RANDOM": "napari_seal.models.registry",
    "create_encoder": "napari_seal.models.factory",
    "get_encoder_spec": "napari_seal.models.registry",
    "list_encoders": "napari_seal.models.registry",
    "register_encoder": "napari_seal.models.registry",
    "resolve_encoder_name": "napari_seal.models.registry",
    "wrap_module": "napari_seal.models.factory",
    "load_state_dict_file": "napari_seal.models.weights",
    "load_weights_strict": "napari_seal.models.weights",
    "encode_images": "napari_seal.models.inference",
    "inference_precision": "napari_seal.models.inference",
    "LoraSpec": "napari_seal.models.lora",
    "apply_lora": "napari_seal.models.lora",
    "default_lora_spec": "napari_seal.models.lora",
    "load_adapters": "napari_seal.models.lora",
    "merge_lora": "napari_seal.models.lora",
    "save_adapters": "napari_seal.models.lora",
    "load_official_seal": "napari_seal.models.seal_checkpoint",
    "load_official_omics": "napari_seal.models.seal_checkpoint",
    "GeneVAE": "napari_seal.models.omics",
    "ImgEmbDecoder": "napari_seal.models.decoder",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module 'napari_seal.models' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return __all__
