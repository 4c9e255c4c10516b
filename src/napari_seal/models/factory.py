"""Encoder factory: build a registry entry's module offline, load weights, wrap it.

:func:`create_encoder` builds the exact architecture (never downloads anything) and
loads a user-supplied weight file strictly (:mod:`napari_seal.models.weights`), or the
embedded ImageNet weights of the ``default`` encoder. :func:`build_module` builds the
randomly initialised module (on the meta device for the giant models);
:func:`wrap_module` makes an :class:`Encoder` around a module built elsewhere (a
LoRA-merged SEAL encoder, a module restored from a run).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_seal.errors import WeightsError
from napari_seal.models.efficientnet import (
    embedded_weights_path,
    from_efficientnet_pytorch,
)
from napari_seal.models.inference import encode_images
from napari_seal.models.registry import (
    _REGISTRY,
    RANDOM,
    EncoderSpec,
    get_encoder_spec,
    list_encoders,
    resolve_encoder_name,
)
from napari_seal.models.transforms import TileTransform
from napari_seal.models.weights import (
    _SHOW,
    _optional_prefixes,
    _shapes,
    adapt_state_dict,
    check_finite,
    diff_state_dict,
    load_state_dict_file,
    load_weights_strict,
    mismatch_error,
)

__all__ = [
    "Encoder",
    "build_and_load",
    "build_module",
    "create_encoder",
    "guess_encoders",
    "imagenet_classifier",
    "load_embedded_weights",
    "wrap_module",
]

log = logging.getLogger(__name__)


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
        for t in self.module.parameters():
            return t.device
        for t in self.module.buffers():
            return t.device
        return torch.device("cpu")

    def encode(self, images, *, batch_size: int = 64, device=None):
        """Embed uint8 RGB tiles (see ``inference.encode_images``)."""
        return encode_images(self, images, batch_size=batch_size, device=device)


def build_module(name: str, *, meta: bool = False):
    """Build the randomly initialised module of ``name`` (on the meta device if asked).

    The meta device allocates no memory: use it to count parameters or to read the key
    layout of the giant models.
    """
    key = resolve_encoder_name(name)
    spec, builder = _REGISTRY[key]
    if meta:
        with torch.device("meta"):
            return builder(spec)
    return builder(spec)


def _torch_dtype(name: str):
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
            load_embedded_weights(module)
    elif isinstance(weights, Mapping):  # an in-memory state dict
        check_finite(weights, source="the state dict")
        module = build_and_load(spec, builder, dict(weights), source="state dict")
    else:
        path = Path(weights).expanduser()
        raw = load_state_dict_file(path)
        module = build_and_load(spec, builder, raw, source=path)
    module.eval()
    if device is not None:
        module.to(device)
    return wrap_module(spec, module, weights=path)


def wrap_module(
    spec: EncoderSpec | str, module: Any, *, weights: Path | None = None
) -> Encoder:
    """Make an :class:`Encoder` around an already built ``module`` of entry ``spec``.

    Used for modules the registry did not load itself: a LoRA-merged SEAL encoder, a
    module restored from a run directory.
    """
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


@functools.lru_cache(maxsize=32)
def _spec_shapes(name: str) -> dict[str, tuple]:
    return _shapes(build_module(name, meta=True))


def guess_encoders(
    state: Mapping[str, torch.Tensor], *, exclude: str | None = None
) -> list[tuple[str, int, int]]:
    """Rank registry entries by how well a raw weight file fits them.

    Cheap enough for an error path: only entries whose parameter count is within 2 %
    of the file's are compared, key by key, with the architecture built on the meta
    device (no memory). Returns ``(name, n_fit, n_keys)`` sorted best first, entries
    with no fitting key left out.
    """
    out = []
    for spec in list_encoders():
        if spec.name == exclude or spec.family == "color-stats":
            continue
        try:
            adapted = adapt_state_dict(spec, dict(state))
        except WeightsError:
            continue
        n_file = sum(v.numel() for v in adapted.values() if v.is_floating_point())
        if abs(n_file - spec.params_m * 1e6) > max(0.02 * spec.params_m * 1e6, 1e4):
            continue
        diff = diff_state_dict(
            _spec_shapes(spec.name), adapted, optional=_optional_prefixes(spec)
        )
        if diff.n_fit > 0:
            score = diff.n_fit - len(diff.missing) - len(diff.unexpected)
            out.append(
                (
                    score,
                    spec.name,
                    diff.n_fit,
                    max(diff.n_expected, diff.n_file),
                    not diff,
                )
            )
    out.sort(key=lambda t: (not t[4], -t[0]))
    return [(name, fit, total) for _, name, fit, total, _ in out]


def build_and_load(
    spec, builder, raw: dict[str, torch.Tensor], *, source: Any = None
) -> torch.nn.Module:
    """Build ``spec``'s module and load a raw weight file's tensors into it strictly.

    The module is first built on the meta device (no memory, no random init) and the
    file's tensors are assigned to it, cast to the module's dtypes: a 1.1 B-parameter
    model then needs one copy of its weights in memory, not two.
    """
    state = adapt_state_dict(spec, raw)
    optional = _optional_prefixes(spec)
    with torch.device("meta"):
        module = builder(spec)
    expected = module.state_dict()
    diff = diff_state_dict(module, state, optional=optional)
    if diff:
        raise mismatch_error(
            diff, raw=raw, spec=spec, source=source, suggest=guess_encoders
        )
    not_float = [
        k
        for k, v in state.items()
        if expected[k].is_floating_point() and not v.is_floating_point()
    ]
    if not_float:
        msg = (
            f"weights {source or spec.name} store {len(not_float)} parameter(s) as "
            f"{state[not_float[0]].dtype}, not floating point (first: {not_float[0]}); "
            "the file is damaged or was quantised: give the original float weights"
        )
        raise WeightsError(msg)
    for key, value in state.items():
        want = expected[key].dtype
        if value.dtype != want and value.is_floating_point():
            state[key] = value.to(want)
    if len(state) == len(expected):
        module.load_state_dict(state, strict=True, assign=True)
        leftover = any(t.is_meta for t in chain(module.parameters(), module.buffers()))
        if not leftover:
            return module
    absent = [k for k in expected if k not in state]
    if absent:
        log.info(
            "%s: %d optional keys absent from the file (not used by the embedding): %s",
            spec.name,
            len(absent),
            absent[:_SHOW],
        )
    module = builder(spec)
    module.load_state_dict(state, strict=not absent)
    return module


def _load_embedded_state() -> dict[str, torch.Tensor]:
    return from_efficientnet_pytorch(load_state_dict_file(embedded_weights_path()))


def load_embedded_weights(module: nn.Module) -> nn.Module:
    """Load the embedded ImageNet weights (without the classifier) into ``module``."""
    state = {
        k: v
        for k, v in _load_embedded_state().items()
        if not k.startswith("classifier.")
    }
    load_weights_strict(module, state, source=embedded_weights_path())
    return module


def imagenet_classifier() -> nn.Linear:
    """The embedded 1000-class ImageNet classifier: ``Linear(1280, 1000)``.

    ``imagenet_classifier()(encoder.module(x))`` gives ImageNet logits.
    """
    state = _load_embedded_state()
    head = nn.Linear(1280, 1000)
    head.load_state_dict(
        {"weight": state["classifier.weight"], "bias": state["classifier.bias"]}
    )
    return head.eval()
