"""Encoder registry (timm-style): names -> specs + builders -> :class:`Encoder`.

``list_encoders`` and :class:`EncoderSpec` are torch-free, so a widget or the CLI can
show the table (licence, gating, where to get the weights) without importing torch.
``create_encoder`` builds the exact architecture offline (never downloads anything) and
loads a user-supplied weight file strictly (:mod:`napari_seal.models.weights`).

The specs themselves live in :mod:`napari_seal.models.encoders`.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from napari_seal.errors import UnknownEncoderError, WeightsError

__all__ = [
    "RANDOM",
    "Encoder",
    "EncoderSpec",
    "build_module",
    "create_encoder",
    "get_builder",
    "get_encoder_spec",
    "list_encoders",
    "register_encoder",
    "resolve_encoder_name",
    "wrap_module",
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


@dataclass
class Encoder:
    """A built encoder: a module plus everything needed to feed it.

    Attributes
    ----------
    name
        Registry name.
    module
        ``nn.Module``: normalised float ``(B, 3, tile_px, tile_px)`` -> ``(B, D)``.
    transform
        :class:`~napari_seal.models.transforms.TileTransform`: uint8 ``(H, W, 3)`` or
        ``(B, H, W, 3)`` -> normalised float tensor ``(B, 3, tile_px, tile_px)``.
    embed_dim, tile_px, mpp
        Output dimension, input side (px) and input pixel size (um/px).
    dtype
        Inference precision (``torch.float32``, ``float16`` or ``bfloat16``);
        :func:`napari_seal.models.inference.encode_images` autocasts to it where the
        device supports it (on CPU only bf16).
    mean, std
        Normalisation used by ``transform``.
    spec
        The registry entry.
    weights
        The weight file loaded (``None`` for random or embedded weights).
    """

    name: str
    module: Any
    transform: Callable[[Any], Any]
    embed_dim: int
    tile_px: int
    mpp: float
    dtype: Any
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    spec: EncoderSpec
    weights: Path | None = None

    @property
    def device(self):
        """Device of the module's first parameter or buffer (CPU when it has none)."""
        import torch

        for t in self.module.parameters():
            return t.device
        for t in self.module.buffers():
            return t.device
        return torch.device("cpu")

    def encode(self, images, *, batch_size: int = 64, device=None):
        """Embed uint8 RGB tiles (see ``inference.encode_images``)."""
        from napari_seal.models.inference import encode_images

        return encode_images(self, images, batch_size=batch_size, device=device)


Builder = Callable[[EncoderSpec], Any]
_REGISTRY: dict[str, tuple[EncoderSpec, Builder]] = {}
_ALIASES: dict[str, str] = {}
_LOADED = False


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


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        import napari_seal.models.encoders  # noqa: F401  (registers the specs)


def resolve_encoder_name(name: str) -> str:
    """Return the registry name for ``name`` or an alias (``uni2_h``, ``univ2``...).

    Raises
    ------
    UnknownEncoderError
        When the name is unknown; the message lists the valid names.
    """
    _ensure_loaded()
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
    _ensure_loaded()
    pat = _norm(pattern)
    return [spec for key, (spec, _) in _REGISTRY.items() if fnmatch.fnmatch(key, pat)]


def build_module(name: str, *, meta: bool = False):
    """Build the randomly initialised module of ``name`` (on the meta device if asked).

    The meta device allocates no memory: use it to count parameters or to read the key
    layout of the giant models.
    """
    import torch

    key = resolve_encoder_name(name)
    spec, builder = _REGISTRY[key]
    if meta:
        with torch.device("meta"):
            return builder(spec)
    return builder(spec)


def _torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def create_encoder(
    name: str, *, weights: str | Path | Mapping | None = None, device=None
) -> Encoder:
    """Build encoder ``name`` offline and load its weights strictly.

    Parameters
    ----------
    name
        Registry name or alias (``list_encoders()`` shows them).
    weights
        A local weight file (safetensors, or a PyTorch file read with
        ``weights_only=True``), an in-memory state dict, ``"random"`` for an
        untrained network, or ``None``:
        the embedded weights for ``default``, random weights for the encoders that do
        not need a file (``test-vit``, ``vit-s``, ``vit-b``, ``color-stats``), and an
        error naming where to get the file for the foundation models.
    device
        Where to put the module (``"cpu"``, ``"cuda"``, a ``torch.device``); default
        CPU.

    Returns
    -------
    Encoder
        In eval mode.

    Raises
    ------
    UnknownEncoderError
        For an unknown name (the message lists the valid ones).
    WeightsError
        When the file is missing, unsafe, unreadable or does not fit the architecture
        (the message names the missing, unexpected and mis-shaped keys).
    """
    from napari_seal.models import weights as wmod

    key = resolve_encoder_name(name)
    spec, builder = _REGISTRY[key]
    path: Path | None = None
    if weights is None and spec.requires_weights:
        msg = (
            f"encoder {spec.name!r} needs its weight file, which napari-seal never "
            f"downloads: get it from {spec.weights_from} and pass it with "
            "--weights FILE "
            "(weights=FILE in Python); weights='random' builds an untrained network"
        )
        raise WeightsError(msg)
    if isinstance(weights, str) and weights == RANDOM:
        module = builder(spec)
    elif weights is None:
        module = builder(spec)
        if spec.family == "efficientnet":
            from napari_seal.models.efficientnet import load_embedded_weights

            load_embedded_weights(module)
    elif isinstance(weights, Mapping):  # an in-memory state dict
        module = wmod.build_and_load(spec, builder, dict(weights), source="state dict")
    else:
        path = Path(weights).expanduser()
        raw = wmod.load_state_dict_file(path)
        module = wmod.build_and_load(spec, builder, raw, source=path)
    module.eval()
    if device is not None:
        module.to(device)
    return wrap_module(spec, module, weights=path)


def get_builder(name: str) -> Builder:
    """Return the builder ``builder(spec) -> nn.Module`` of ``name``."""
    return _REGISTRY[resolve_encoder_name(name)][1]


def wrap_module(
    spec: EncoderSpec | str, module: Any, *, weights: Path | None = None
) -> Encoder:
    """Make an :class:`Encoder` around an already built ``module`` of entry ``spec``.

    Used for modules the registry did not load itself: a LoRA-merged SEAL encoder, a
    module restored from a run directory.
    """
    from napari_seal.models.transforms import TileTransform

    if not isinstance(spec, EncoderSpec):
        spec = get_encoder_spec(spec)
    transform = TileTransform(
        spec.tile_px,
        tuple(spec.mean),
        tuple(spec.std),
        resize_px=spec.resize_px,
        interpolation=spec.interpolation,
    )
    return Encoder(
        name=spec.name,
        module=module,
        transform=transform,
        embed_dim=spec.embed_dim,
        tile_px=spec.tile_px,
        mpp=spec.mpp,
        dtype=_torch_dtype(spec.dtype),
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        spec=spec,
        weights=weights,
    )
