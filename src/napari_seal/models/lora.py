"""LoRA on the last blocks of an encoder, through peft.

SEAL (``reference/seal_method.md`` 2.2): all backbone weights frozen; LoRA with r=8,
alpha=8, dropout 0.15, no rsLoRA on ``attn.qkv``, ``attn.proj``, ``mlp.fc1``,
``mlp.fc2`` of the last N transformer blocks (CONCH N=1, UNI2-h N=3). For the embedded
EfficientNet-Lite0 the targets are the pointwise (1x1) convolutions ``conv_pw`` and
``conv_pwl`` of the last N blocks of ``blocks.{stage}.{index}`` plus ``conv_head``.

Target selection (:func:`lora_target_names`): ``nn.Linear``, ``nn.Conv1d`` and
``nn.Conv2d`` modules whose name ends with one of ``target_modules`` (as a dotted
suffix) and whose block index - the integers captured by ``block_regex`` (one for ViTs,
``(stage, index)`` for EfficientNet) - is among the last ``last_n_blocks`` distinct
blocks, plus the modules named exactly in ``extra_modules``. peft gets the exact list.

Adapter files (:func:`save_adapters`): a folder with ``adapter.safetensors`` (the LoRA
tensors, peft's adapter state dict: ``base_model.model.<layer>.lora_{A,B}.weight``) and
``lora_spec.json`` (the :class:`LoraSpec`, the exact target names, the encoder name).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from napari_seal.errors import BadInputError, CheckpointError

__all__ = [
    "ADAPTER_FILE",
    "SPEC_FILE",
    "LoraSpec",
    "apply_lora",
    "default_lora_spec",
    "load_adapters",
    "lora_target_names",
    "merge_lora",
    "save_adapters",
]

ADAPTER_FILE = "adapter.safetensors"
SPEC_FILE = "lora_spec.json"


@dataclass(frozen=True)
class LoraSpec:
    """LoRA hyper-parameters and where to put the adapters.

    Parameters
    ----------
    r, alpha, dropout, use_rslora
        peft ``LoraConfig`` values (SEAL: 8, 8, 0.15, False).
    target_modules
        Dotted name suffixes of the layers to adapt.
    last_n_blocks
        Adapt only the last N blocks (0 is treated as 1, as SEAL does).
    block_regex
        Regex whose groups capture a layer's block index (``^blocks\\.(\\d+)\\.``).
    extra_modules
        Layers adapted whatever their block (``("conv_head",)`` for EfficientNet).
    """

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.15
    use_rslora: bool = False
    target_modules: tuple[str, ...] = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    last_n_blocks: int = 3
    block_regex: str = r"^blocks\.(\d+)\."
    extra_modules: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        out = asdict(self)
        out["target_modules"] = list(self.target_modules)
        out["extra_modules"] = list(self.extra_modules)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraSpec:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            msg = f"unknown LoRA settings {unknown}; expected some of {sorted(names)}"
            raise CheckpointError(msg)
        kw = dict(data)
        for key in ("target_modules", "extra_modules"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)


def default_lora_spec(encoder: Any, **overrides: Any) -> LoraSpec:
    """The registry's LoRA defaults for an encoder (name, spec or ``Encoder``)."""
    from napari_seal.models.registry import EncoderSpec, get_encoder_spec

    spec = (
        encoder if isinstance(encoder, EncoderSpec) else getattr(encoder, "spec", None)
    )
    if spec is None:
        spec = get_encoder_spec(str(encoder))
    base = LoraSpec(
        target_modules=tuple(spec.lora_targets),
        last_n_blocks=spec.lora_last_n_blocks,
        block_regex=spec.lora_block_regex,
        extra_modules=tuple(spec.lora_extra_modules),
    )
    return replace(base, **overrides)


def _module_of(obj: Any):
    return getattr(obj, "module", obj) if not hasattr(obj, "named_modules") else obj


def lora_target_names(
    module: Any, spec: LoraSpec, *, block_regex: str | None = None
) -> list[str]:
    """Exact names of the layers LoRA adapts (rules in the module docstring)."""
    module = _module_of(module)
    rx = re.compile(block_regex or spec.block_regex)
    candidates: list[tuple[str, tuple[int, ...] | None]] = []
    for name, mod in module.named_modules():
        if not _is_linear(mod):
            continue
        if name in spec.extra_modules:
            candidates.append((name, None))
            continue
        if not any(name == t or name.endswith("." + t) for t in spec.target_modules):
            continue
        m = rx.search(name)
        if m:
            candidates.append((name, tuple(int(g) for g in m.groups())))
    blocks = sorted({b for _, b in candidates if b is not None})
    keep = set(blocks[-max(1, spec.last_n_blocks) :]) if blocks else set()
    return [n for n, b in candidates if b is None or b in keep]


def _is_linear(mod: Any) -> bool:
    from torch import nn

    return isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d))


def apply_lora(module: Any, spec: LoraSpec, *, target_names: list[str] | None = None):
    """Freeze ``module`` and wrap it with LoRA adapters (a peft ``PeftModel``).

    Parameters
    ----------
    module
        An ``nn.Module`` (or an ``Encoder``: its ``module`` is used). peft injects the
        adapters into it in place.
    spec
        The :class:`LoraSpec`.
    target_names
        Exact layer names to adapt instead of the spec's selection (official SEAL
        checkpoints name theirs).

    Returns
    -------
    peft.PeftModel
        Only ``lora_A``/``lora_B`` weights require gradients. The spec and target names
        are kept as ``model.napari_seal_lora = {"spec": ..., "targets": [...]}``.
    """
    from peft import LoraConfig, get_peft_model

    module = _module_of(module)
    names = (
        list(target_names)
        if target_names is not None
        else lora_target_names(module, spec)
    )
    if not names:
        msg = (
            "no layer of this encoder matches the LoRA targets "
            f"{list(spec.target_modules)} in blocks matching {spec.block_regex!r}; "
            "this encoder cannot be fine-tuned "
            "with LoRA (choose a foundation model or the default encoder)"
        )
        raise BadInputError(msg)
    for p in module.parameters():
        p.requires_grad_(False)
    config = LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        use_rslora=spec.use_rslora,
        target_modules=names,
        bias="none",
        task_type=None,
    )
    model = get_peft_model(module, config)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_A" in name or "lora_B" in name)
    model.napari_seal_lora = {"spec": spec, "targets": names}
    return model


def _lora_info(model: Any) -> dict[str, Any]:
    info = getattr(model, "napari_seal_lora", None)
    if info is None:
        msg = "this model has no LoRA adapters from apply_lora(); apply LoRA first"
        raise BadInputError(msg)
    return info


def save_adapters(
    model: Any, path: str | Path, *, encoder_name: str | None = None
) -> Path:
    """Write ``adapter.safetensors`` and ``lora_spec.json`` into folder ``path``."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from napari_seal.io.atomic import (
        atomic_path,
        atomic_write_text,
        ensure_writable_dir,
    )

    info = _lora_info(model)
    folder = ensure_writable_dir(path)
    tensors = {
        k: v.detach().cpu().contiguous()
        for k, v in get_peft_model_state_dict(model).items()
    }
    with atomic_path(folder / ADAPTER_FILE, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {
        "spec": info["spec"].to_dict(),
        "targets": list(info["targets"]),
        "encoder": encoder_name,
        "format": "napari-seal-lora/1",
    }
    atomic_write_text(folder / SPEC_FILE, json.dumps(meta, indent=2))
    return folder


def load_adapters(module: Any, path: str | Path):
    """Apply the adapters saved in folder ``path`` to ``module``; return the peft model.

    Raises
    ------
    CheckpointError
        When a file is missing, the layers do not exist in ``module``, or the adapter
        tensors do not match the layers exactly (names and shapes are given).
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from napari_seal.models.weights import diff_state_dict, load_state_dict_file

    folder = Path(path)
    spec_file, tensor_file = folder / SPEC_FILE, folder / ADAPTER_FILE
    for f in (spec_file, tensor_file):
        if not f.is_file():
            msg = f"{f} is missing; {folder} is not a complete adapter folder"
            raise CheckpointError(msg)
    meta = json.loads(spec_file.read_text())
    spec = LoraSpec.from_dict(meta["spec"])
    targets = list(meta["targets"])
    names = {n for n, _ in _module_of(module).named_modules()}
    absent = [t for t in targets if t not in names]
    if absent:
        msg = (
            f"the adapters in {folder} target layers this encoder lacks "
            f"({absent[:10]}); they were trained on encoder {meta.get('encoder')!r}"
        )
        raise CheckpointError(msg)
    tensors = load_state_dict_file(tensor_file, unwrap=False)
    model = apply_lora(module, spec, target_names=targets)
    diff = diff_state_dict(get_peft_model_state_dict(model), tensors)
    if diff:
        msg = f"adapter tensors in {tensor_file} do not fit: {diff.describe()}"
        raise CheckpointError(msg)
    set_peft_model_state_dict(model, tensors)
    return model


def merge_lora(model: Any):
    """Fold the adapters into the base weights; return the plain ``nn.Module``."""
    merged = model.merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged
