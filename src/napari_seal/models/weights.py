"""Reading user weight files safely and loading them strictly.

Reading (:func:`load_state_dict_file`):

* safetensors files (recognised by their header, whatever the suffix) are read with
  ``safetensors.torch.load_file``;
* anything else goes through ``torch.load(..., map_location="cpu", weights_only=True)``:
  a pickle that needs arbitrary Python objects (code execution) is refused with
  :class:`~napari_seal.errors.WeightsError`, never unpickled.

Unwrapping (conservative, :func:`unwrap_state_dict`): while the object is a mapping that
is not all tensors, descend into the first of ``state_dict``, ``model_state_dict``,
``model``, ``module`` that is itself a mapping (training checkpoints); then, when
*every* key starts with ``module.`` (DataParallel/DDP), strip that prefix. Anything
else that is not a tensor is an error naming the keys: nothing is silently dropped.

Loading (:func:`load_weights_strict`, :func:`build_and_load`): missing keys, unexpected
keys and shape mismatches are all errors; the message names the first ten of each with
their counts and, when the file fits another registry entry better, names that entry.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_seal.errors import WeightsError

__all__ = [
    "mismatch_error",
    "StateDiff",
    "check_finite",
    "adapt_state_dict",
    "describe_state_dict",
    "diff_state_dict",
    "load_state_dict_file",
    "load_weights_strict",
    "unwrap_state_dict",
]

log = logging.getLogger(__name__)

_WRAPPERS = ("state_dict", "model_state_dict", "model", "module")
_SHOW = 10


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with path.open("rb") as fh:
        head = fh.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def load_state_dict_file(
    path: str | Path, *, unwrap: bool = True
) -> dict[str, torch.Tensor]:
    """Read a weight file into a ``{name: tensor}`` dict on the CPU, safely.

    Parameters
    ----------
    path
        A ``.safetensors`` file or a PyTorch file (``.bin``, ``.pth``, ``.pt``).
    unwrap
        Apply :func:`unwrap_state_dict` (training-checkpoint wrappers, ``module.``).

    Raises
    ------
    WeightsError
        When the file is missing, unreadable, or a pickle that needs arbitrary objects.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        msg = f"weights file {path} does not exist; check the path given to --weights"
        raise WeightsError(msg)
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            msg = f"cannot read safetensors file {path}: {err}; download it again"
            raise WeightsError(msg) from err
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            msg = (
                f"refusing to load {path}: torch.load(weights_only=True) rejected "
                "it, so it is not a plain dict of tensors and unpickling it could run "
                "code. Use "
                "a plain state dict: convert it to .safetensors, or re-save it with "
                "torch.save(model.state_dict(), FILE) where you trust it"
            )
            raise WeightsError(msg) from err
        # garbage (a text file, random bytes) makes the weights-only unpickler fail
        # with whatever its parser hits first, IndexError included
        except (
            RuntimeError,
            EOFError,
            ValueError,
            OSError,
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
        ) as err:
            msg = (
                f"cannot read {path} as a PyTorch or safetensors weight file ({err}); "
                "the file is damaged or of another kind, download it again"
            )
            raise WeightsError(msg) from err
    state = unwrap_state_dict(obj, source=path) if unwrap else obj
    if isinstance(state, Mapping):
        check_finite(state, source=path)
    return state


def check_finite(state: Mapping[str, Any], *, source: Any = None) -> None:
    """Refuse weights holding NaN or infinite values, naming the tensor.

    A model built from them embeds every tile as NaN, which surfaces much later as
    blank overlays or a "no finite values" error far from the cause (a download cut
    short, a training that diverged).

    Raises
    ------
    WeightsError
        Naming the first bad tensor, its count of NaN / inf values and how many
        tensors are affected.
    """
    bad = []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        finite = torch.isfinite(value)
        if not bool(finite.all()):
            bad.append((key, value, int(value.numel() - finite.sum())))
    if not bad:
        return
    key, value, n_bad = bad[0]
    n_nan = int(torch.isnan(value).sum())
    where = f" in {source}" if source is not None else ""
    more = f" ({len(bad) - 1} more tensors too)" if len(bad) > 1 else ""
    msg = (
        f"the weights{where} are not usable: tensor {key!r} holds {n_nan} NaN and "
        f"{n_bad - n_nan} infinite values of {value.numel()}{more}. The file is "
        "damaged or was saved from a training that diverged: download it again, or "
        "use an earlier checkpoint"
    )
    raise WeightsError(msg)


def unwrap_state_dict(obj: Any, *, source: Any = None) -> dict[str, torch.Tensor]:
    """Return the tensor dict inside a checkpoint (rules in the module docstring)."""
    where = f" in {source}" if source is not None else ""
    for _ in range(4):
        if not isinstance(obj, Mapping):
            msg = f"expected a dict of tensors{where}, found {type(obj).__name__}"
            raise WeightsError(msg)
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next(
            (obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None
        )
        if inner is None:
            bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
            msg = (
                f"the weights{where} hold {len(bad)} entries that are not tensors "
                f"({bad[:_SHOW]}) and no state_dict/model entry; "
                "save a plain state dict"
            )
            raise WeightsError(msg)
        obj = inner
    else:
        msg = f"the weights{where} are nested too deeply; save a plain state dict"
        raise WeightsError(msg)
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


@dataclass
class StateDiff:
    """Differences between a module's state dict and a file's."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    n_expected: int = 0
    n_file: int = 0

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    @property
    def n_fit(self) -> int:
        """Number of file keys whose name and shape fit the module."""
        return self.n_file - len(self.unexpected) - len(self.mismatched)

    def describe(self) -> str:
        """One line naming the first keys of each kind, with counts."""
        parts = []
        if self.missing:
            parts.append(
                f"{len(self.missing)} missing keys "
                f"(first: {', '.join(self.missing[:_SHOW])})"
            )
        if self.unexpected:
            parts.append(
                f"{len(self.unexpected)} unexpected keys "
                f"(first: {', '.join(self.unexpected[:_SHOW])})"
            )
        if self.mismatched:
            shown = ", ".join(
                f"{k} file {list(a)} vs model {list(b)}"
                for k, a, b in self.mismatched[:_SHOW]
            )
            parts.append(f"{len(self.mismatched)} shape mismatches ({shown})")
        return "; ".join(parts)


def _shapes(obj: Any) -> dict[str, tuple]:
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    return {
        k: tuple(v) if isinstance(v, tuple) else tuple(v.shape) for k, v in obj.items()
    }


def diff_state_dict(
    module_or_shapes: Any, state: Mapping[str, Any], *, optional: tuple[str, ...] = ()
) -> StateDiff:
    """Compare a module (or ``{key: shape}``) with a state dict; see :class:`StateDiff`.

    Missing keys starting with one of ``optional`` are not reported.
    """
    expected = _shapes(module_or_shapes)
    diff = StateDiff(n_expected=len(expected), n_file=len(state))
    diff.missing = [
        k for k in expected if k not in state and not k.startswith(optional)
    ]
    diff.unexpected = [k for k in state if k not in expected]
    diff.mismatched = [
        (k, tuple(v.shape), expected[k])
        for k, v in state.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    return diff


def adapt_state_dict(spec, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply an encoder's documented key conversions and ignored prefixes.

    * ``default``: EfficientNet-PyTorch names -> timm (:mod:`.efficientnet`);
    * ``phikon-v2``: Hugging Face ``Dinov2Model`` names -> timm (:mod:`.vit`);
    * ``conch``: keep ``visual.*`` of a full CONCH file (:mod:`.conch`);
    * then drop keys starting with ``spec.ignore_prefixes``.
    """
    if spec.family == "efficientnet":
        from napari_seal.models.efficientnet import (
            from_efficientnet_pytorch,
            is_efficientnet_pytorch_layout,
        )

        if is_efficientnet_pytorch_layout(state):
            state = from_efficientnet_pytorch(state)
    elif spec.family == "phikon-v2":
        from napari_seal.models.vit import from_hf_dinov2, is_hf_dinov2_layout

        if is_hf_dinov2_layout(state):
            state = from_hf_dinov2(state)
    elif spec.family == "conch":
        from napari_seal.models.conch import select_visual

        state = select_visual(state)
    if spec.ignore_prefixes:
        state = {
            k: v for k, v in state.items() if not k.startswith(spec.ignore_prefixes)
        }
    return state


def _optional_prefixes(spec) -> tuple[str, ...]:
    if spec is not None and spec.family == "conch":
        from napari_seal.models.conch import OPTIONAL_PREFIXES

        return OPTIONAL_PREFIXES
    return ()


def describe_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """Cheap architecture summary of a ViT-like file: dim, depth, patch, registers."""
    bits = []
    for key, value in state.items():
        if key.endswith(
            ("patch_embed.proj.weight", "patch_embeddings.projection.weight")
        ):
            bits += [f"dim {value.shape[0]}", f"patch {value.shape[-1]}"]
            break
    blocks = {m[1] for k in state if (m := re.search(r"(?:blocks|layer)\.(\d+)\.", k))}
    if blocks:
        bits.append(f"{len(blocks)} blocks")
    reg = next((v for k, v in state.items() if k.endswith("reg_token")), None)
    if reg is not None:
        bits.append(f"{reg.shape[1]} registers")
    return ", ".join(bits)


def mismatch_error(
    diff: StateDiff, *, raw: Mapping | None, spec, source, suggest=None
) -> WeightsError:
    """Error for weights that do not fit; ``suggest(raw, exclude=)`` ranks entries."""
    name = spec.name if spec is not None else "this module"
    src = f"weights {source}" if source is not None else "these weights"
    msg = f"{src} do not fit encoder {name!r}: {diff.describe()}."
    if raw is not None:
        desc = describe_state_dict(raw)
        if desc:
            msg += f" The file looks like: {desc}."
        ranked = (
            suggest(raw, exclude=spec.name if spec is not None else None)
            if suggest is not None
            else []
        )
        if ranked:
            best, fit, total = ranked[0]
            if fit == total or fit >= 0.9 * total:
                msg += (
                    f" It fits encoder {best!r} ({fit}/{total} keys): "
                    f"use --encoder {best} (encoder={best!r})."
                )
    if spec is not None and spec.weights_from:
        msg += f" Weights for {name!r}: {spec.weights_from}."
    return WeightsError(msg)


def load_weights_strict(
    module: torch.nn.Module, state_dict_or_path: Any, *, source: Any = None, spec=None
) -> torch.nn.Module:
    """Load a state dict (or a file) into ``module``; any key difference is an error.

    Parameters
    ----------
    module
        The built module.
    state_dict_or_path
        A ``{name: tensor}`` mapping or a weight file path.
    source
        What to call the weights in messages (defaults to the path).
    spec
        The module's :class:`~napari_seal.models.registry.EncoderSpec`, for messages.

    Raises
    ------
    WeightsError
        Naming missing and unexpected keys and shape mismatches (first ten + counts)
        and, when the file fits another registry entry, that entry.
    """
    if isinstance(state_dict_or_path, (str, Path)):
        source = source or state_dict_or_path
        state = load_state_dict_file(state_dict_or_path)
    else:
        state = dict(state_dict_or_path)
        check_finite(state, source=source)
    diff = diff_state_dict(module, state, optional=_optional_prefixes(spec))
    if diff:
        raise mismatch_error(diff, raw=state, spec=spec, source=source)
    module.load_state_dict(state, strict=len(state) == diff.n_expected)
    return module


