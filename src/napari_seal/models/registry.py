"""Encoder registry (timm-style): names -> :class:`EncoderSpec` + builder. Specs only.

Torch-free, so a widget or the CLI can show the table (licence, gating, where to get
the weights) without importing torch. The table itself is
:mod:`napari_seal.models.encoders` (registered here at import);
:mod:`napari_seal.models.factory` builds modules and :class:`Encoder` objects from it.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from napari_seal.errors import UnknownEncoderError
from napari_seal.models import encoders as _catalogue

__all__ = [
    "RANDOM",
    "EncoderSpec",
    "get_builder",
    "get_encoder_spec",
    "list_encoders",
    "register_encoder",
    "resolve_encoder_name",
]

log = logging.getLogger(__name__)

#: ``weights=RANDOM`` builds an encoder with random (untrained) weights, even when its
#: spec needs a weight file: for tests and random-feature baselines.
RANDOM = "random"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """Everything known about one registry entry (torch-free, JSON-able).

    Attributes
    ----------
    name
        Registry name (``"uni2-h"``).
    arch
        Human-readable architecture (``"ViT-H/14, 8 registers, SwiGLU"``).
    family
        Builder family: ``"timm"``, ``"vit-cls-mean"``, ``"phikon-v2"``, ``"conch"``,
        ``"efficientnet"``, ``"color-stats"``.
    timm_name, timm_kwargs
        ``timm.create_model`` name and keyword arguments. Layer classes are given by
        name (``"SwiGLUPacked"``, ``"SiLU"``) and resolved by the builder.
    params_m
        Parameter count of the built module, in millions.
    embed_dim
        Output dimension ``D`` of ``Encoder.module``.
    tile_px, mpp
        Input tile side in pixels and its pixel size in micrometres.
    dtype
        Inference precision from the model card: ``"fp32"``, ``"fp16"`` or ``"bf16"``.
    mean, std
        Normalisation on the ``[0, 1]`` scale.
    resize_px, interpolation
        Resize (shorter side) before the centre crop, see ``TileTransform``.
    licence, gated, weights_from
        Weight licence, whether the download is gated, and where a user gets the file.
    requires_weights
        ``True`` when a random network would be meaningless (foundation models):
        ``create_encoder`` then asks for ``weights=FILE`` (or ``weights="random"``).
    lora_targets, lora_last_n_blocks, lora_block_regex, lora_extra_modules
        LoRA defaults (:func:`napari_seal.models.lora.default_lora_spec`).
    ignore_prefixes
        Keys of a weight file that are dropped before the strict load because the
        module does not use them (a classification head, a text tower).
    aliases
        Other accepted names (``"univ2"``: SEAL's key).
    seal_key
        The backbone key in SEAL's checkpoint names (``seal_<key>_vision.pth``).
    notes
        Free text: output pooling, assumptions.
    """

    name: str
    arch: str
    family: str
    embed_dim: int
    params_m: float
    tile_px: int = 224
    mpp: float = 0.5
    dtype: str = "fp32"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize_px: int | None = None
    interpolation: str = "bilinear"
    timm_name: str | None = None
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    licence: str = ""
    gated: bool = False
    weights_from: str = ""
    requires_weights: bool = False
    lora_targets: tuple[str, ...] = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    lora_last_n_blocks: int = 3
    lora_block_regex: str = r"^blocks\.(\d+)\."
    lora_extra_modules: tuple[str, ...] = ()
    ignore_prefixes: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    seal_key: str | None = None
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of every field."""
        out = asdict(self)
        for key in (
            "mean",
            "std",
            "lora_targets",
            "lora_extra_modules",
            "ignore_prefixes",
            "aliases",
        ):
            out[key] = list(out[key])
        return out


Builder = Callable[[EncoderSpec], Any]
_REGISTRY: dict[str, tuple[EncoderSpec, Builder]] = {}
_ALIASES: dict[str, str] = {}


def _norm(name: str) -> str:
    return str(name).strip().lower().replace("_", "-").replace(" ", "-")


def register_encoder(name: str, *, builder: Builder | None = None, **fields: Any):
    """Register an encoder spec and its builder (decorator or direct call).

    Parameters
    ----------
    name
        Registry name.
    builder
        ``builder(spec) -> nn.Module`` building the randomly initialised architecture.
        When omitted, ``register_encoder`` returns a decorator for the builder.
    **fields
        The other :class:`EncoderSpec` fields.

    Returns
    -------
    EncoderSpec or decorator
        The registered spec when ``builder`` is given, else a decorator.
    """
    spec = EncoderSpec(name=name, **fields)

    def _register(fn: Builder) -> Builder:
        key = _norm(name)
        if key in _REGISTRY:
            msg = f"encoder {name!r} is registered twice"
            raise ValueError(msg)
        _REGISTRY[key] = (spec, fn)
        for alias in spec.aliases:
            _ALIASES[_norm(alias)] = key
        return fn

    if builder is not None:
        _register(builder)
        return spec
    return _register


def resolve_encoder_name(name: str) -> str:
    """Return the registry name for ``name`` or an alias (``uni2_h``, ``univ2``...).

    Raises
    ------
    UnknownEncoderError
        When the name is unknown; the message lists the valid names.
    """
    key = _norm(name)
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        names = ", ".join(_REGISTRY)
        msg = f"unknown encoder {name!r}; choose one of: {names}"
        raise UnknownEncoderError(msg)
    return key


def get_encoder_spec(name: str) -> EncoderSpec:
    """Return the :class:`EncoderSpec` of ``name`` (aliases accepted)."""
    return _REGISTRY[resolve_encoder_name(name)][0]


def list_encoders(pattern: str = "*") -> list[EncoderSpec]:
    """List registered encoders whose name matches a glob ``pattern`` (torch-free)."""
    pat = _norm(pattern)
    return [spec for key, (spec, _) in _REGISTRY.items() if fnmatch.fnmatch(key, pat)]


def get_builder(name: str) -> Builder:
    """Return the builder ``builder(spec) -> nn.Module`` of ``name``."""
    return _REGISTRY[resolve_encoder_name(name)][1]


# the built-in table (torch-free): registered once, when the registry is imported
for _name, _fields in _catalogue.ENTRIES:
    register_encoder(_name, **_fields)
