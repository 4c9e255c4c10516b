"""``TrainConfig``: the frozen, validated configuration of a SEAL training run.

A run directory stores ``config.json`` = ``TrainConfig.to_dict()``; CLI flags map 1:1 to
fields. Named :data:`PRESETS` size the run for the hardware; :func:`preset_for_device`
picks one (``napari-seal train`` without flags uses it). Choices the SEAL spec leaves
open are fields here, documented in ``docs/training.md``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_seal.errors import TrainingConfigError

__all__ = ["PRESETS", "TrainConfig", "config_from_preset", "preset_for_device"]

log = logging.getLogger(__name__)

AUGMENT_MODES = ("none", "soft", "hard")
PRECISIONS = ("bf16", "fp32")
REDUCTIONS = ("sum", "mean")


def _help(text: str, default: Any) -> Any:
    # immutable defaults only (tuples, not lists), so a plain default is safe
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class TrainConfig:
    """Configuration of a SEAL fine-tuning run (defaults = the ``cpu`` preset).

    Every field is validated on construction; a bad value raises
    :class:`~napari_seal.errors.TrainingConfigError` naming the field, the value and
    the allowed range. See ``docs/training.md`` for each choice.

    Examples
    --------
    >>> cfg = TrainConfig(epochs=2, batch_size=16)
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    encoder: str = _help("registry name of the base encoder", "default")
    weights: str | None = _help("local weight file of the base encoder", None)
    lora: dict[str, Any] | None = _help(
        "LoraSpec fields (r, alpha, dropout, target_modules, last_n_blocks); "
        "None = the encoder's registry default",
        None,
    )
    epochs: int = _help("passes over the training spots", 15)
    batch_size: int = _help("global batch size (spots per step, all ranks)", 64)
    lr: float = _help("AdamW learning rate (all parameter groups)", 3e-4)
    weight_decay: float = _help("AdamW weight decay", 0.2)
    warmup_steps: int = _help("linear warm-up steps before the cosine decay", 0)
    tau: float = _help("CLIP temperature (fixed)", 0.05)
    n_genes: int = _help(
        "number of highly variable genes in the panel "
        "(markers and include_genes are added on top)",
        256,
    )
    include_genes: tuple[str, ...] = _help("genes always added to the panel", ())
    markers: bool = _help("add the default pathology marker list when present", True)
    smooth: bool = _help("neighbour-smooth raw counts before normalising", True)
    smooth_radius: float = _help("smoothing radius in inter-spot distances", 1.5)
    augment: str = _help("image augmentation: none | soft | hard", "hard")
    augment_views: int = _help(
        "0: fresh augmentation every step (full forward); K > 0: K augmented views "
        "per spot run once through the frozen layers before the first LoRA block",
        4,
    )
    precision: str = _help("bf16 autocast where supported, else fp32", "bf16")
    seed: int = _help("seed of every random choice (init, order, augmentation)", 42)
    max_steps: int | None = _help("stop after this many optimiser steps", None)
    eval_fraction: float = _help("fraction of spots held out for EvalEvent", 0.0)
    clip_weight: float = _help("weight of the CLIP loss", 1.0)
    recon_vae_weight: float = _help("weight of the VAE reconstruction loss", 1.0)
    recon_img_weight: float = _help("weight of the image-decoder reconstruction", 1.0)
    pearson_weight: float = _help("weight of sum_g (1 - r_g)^2 in recon", 0.05)
    mse_weight: float = _help("weight of the z-scored MSE in recon", 5.0)
    pearson_reduction: str = _help("sum (SEAL) or mean over genes", "sum")
    recon_scale: float = _help("factor on both recon terms (official 0.1 option)", 1.0)
    kl_weight: float = _help("weight of the VAE KL term (SEAL: 0)", 0.0)
    shuffle_pairs: bool = _help("control: shuffle spot<->expression pairs", False)
    vae_hidden: tuple[int, ...] = _help("omics VAE encoder widths", (1024, 512))
    n_flows: int = _help("planar flows in the omics VAE", 3)
    vae_dropout: float = _help("omics VAE dropout", 0.0)
    decoder_hidden: int = _help("image->gene decoder hidden width", 512)
    init_decoder_bias: bool = _help(
        "start both decoders' output biases at the training gene means", True
    )
    vae_logvar_init: float | None = _help(
        "initial fc_logvar bias of the omics VAE (None: PyTorch default, ~0)", -6.0
    )
    max_missing_fraction: float = _help(
        "a sample missing more of the panel than this is rejected", 0.5
    )
    preset: str | None = _help("preset the config was built from (informative)", None)

    def __post_init__(self) -> None:
        def fix(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if isinstance(self.include_genes, str):
            fix("include_genes", tuple(g for g in self.include_genes.split(",") if g))
        fix("include_genes", tuple(str(g).strip() for g in self.include_genes))
        fix("vae_hidden", tuple(int(h) for h in self.vae_hidden))
        if self.weights is not None and str(self.weights) != "random":
            # absolute, so a run directory is usable from any working directory
            fix("weights", str(Path(self.weights).expanduser().resolve()))
        if self.lora is not None:
            if hasattr(self.lora, "to_dict"):
                fix("lora", self.lora.to_dict())
            elif not isinstance(self.lora, Mapping):
                self._bad("lora", self.lora, "a dict of LoraSpec fields or None")
            else:
                fix("lora", dict(self.lora))
            from napari_seal.models.lora import LoraSpec

            known = {f.name for f in dataclasses.fields(LoraSpec)}
            unknown = sorted(set(self.lora) - known)
            if unknown:
                self._bad("lora", self.lora, f"keys among {', '.join(sorted(known))}")
        if not isinstance(self.encoder, str) or not self.encoder:
            self._bad("encoder", self.encoder, "a registry name such as 'default'")
        self._int_range("epochs", 1)
        self._int_range("batch_size", 2)
        self._int_range("warmup_steps", 0)
        self._int_range("n_genes", 1)
        self._int_range("seed", 0)
        self._int_range("n_flows", 0)
        self._int_range("augment_views", 0)
        self._int_range("decoder_hidden", 1)
        if self.max_steps is not None:
            self._int_range("max_steps", 1)
        if self.vae_logvar_init is not None:
            self._float_range("vae_logvar_init", -20.0, 5.0)
        self._float_range("lr", 0.0, 1.0, low_open=True)
        self._float_range("weight_decay", 0.0, 10.0)
        self._float_range("tau", 0.0, 10.0, low_open=True)
        self._float_range("smooth_radius", 0.0, 10.0)
        self._float_range("eval_fraction", 0.0, 0.9)
        self._float_range("vae_dropout", 0.0, 0.99)
        self._float_range("max_missing_fraction", 0.0, 1.0)
        for name in (
            "clip_weight",
            "recon_vae_weight",
            "recon_img_weight",
            "pearson_weight",
            "mse_weight",
            "recon_scale",
            "kl_weight",
        ):
            self._float_range(name, 0.0, 1e6)
        for name, allowed in (
            ("augment", AUGMENT_MODES),
            ("precision", PRECISIONS),
            ("pearson_reduction", REDUCTIONS),
        ):
            if getattr(self, name) not in allowed:
                self._bad(name, getattr(self, name), " | ".join(allowed))
        if not self.vae_hidden or min(self.vae_hidden) < 1:
            self._bad("vae_hidden", self.vae_hidden, "one or more positive widths")

    def _bad(self, name: str, value: Any, allowed: str) -> None:
        msg = f"TrainConfig.{name}={value!r} is invalid; allowed: {allowed}"
        raise TrainingConfigError(msg)

    def _int_range(self, name: str, low: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                object.__setattr__(self, name, int(value))
                value = int(value)
            else:
                self._bad(name, value, f"an integer >= {low}")
        if value < low:
            self._bad(name, value, f"an integer >= {low}")

    def _float_range(
        self, name: str, low: float, high: float, *, low_open: bool = False
    ) -> None:
        value = getattr(self, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
            ok = (value > low if low_open else value >= low) and value <= high
        if not ok:
            bracket = "(" if low_open else "["
            self._bad(name, getattr(self, name), f"a number in {bracket}{low}, {high}]")
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            msg = (
                f"unknown TrainConfig field(s) {unknown}; valid fields: "
                f"{', '.join(sorted(names))}"
            )
            raise TrainingConfigError(msg)
        kwargs = dict(data)
        for key in ("include_genes", "vae_hidden"):
            if key in kwargs and isinstance(kwargs[key], list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> TrainConfig:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


# Presets: overrides on top of the TrainConfig defaults. See docs/training.md.
PRESETS: dict[str, dict[str, Any]] = {
    # The SEAL settings (reference/seal_method.md 4.4): for GPUs.
    "paper": {
        "epochs": 10,
        "batch_size": 384,
        "lr": 1e-4,
        "n_genes": 2000,
        "augment": "hard",
        "augment_views": 0,
        "precision": "bf16",
    },
    # GPU sizes: the paper recipe at a batch that fits the memory.
    "80GB": {
        "epochs": 10,
        "batch_size": 384,
        "lr": 1e-4,
        "n_genes": 2000,
        "augment": "hard",
        "augment_views": 0,
        "precision": "bf16",
    },
    "24GB": {
        "epochs": 10,
        "batch_size": 128,
        "lr": 1e-4,
        "n_genes": 2000,
        "augment": "hard",
        "augment_views": 0,
        "precision": "bf16",
    },
    # A few CPU minutes on ~1k spots with the default encoder (issue 3 calibration:
    # lr 1e-4 under-trains at this scale; issue 15, her2st leave-one-section-out:
    # lr 1e-3 beats 3e-4 in every fold on gene queries (0.631 vs 0.623 AUROC) and on
    # the HEST probe with normalised targets (+0.011 vs -0.001 over frozen); then 30
    # epochs beat 15 in every fold on that probe (+0.021 vs +0.011, same machine),
    # gene queries level (0.632 vs 0.631)). docs/benchmarks.md has the search.
    "cpu": {
        "epochs": 30,
        "batch_size": 64,
        "lr": 1e-3,
        "n_genes": 256,
        "augment": "hard",
        "augment_views": 4,
        "precision": "bf16",
    },
    # A handful of steps: tests and the demo.
    "cpu-smoke": {
        "epochs": 1,
        "batch_size": 8,
        "lr": 3e-4,
        "n_genes": 64,
        "augment": "hard",
        "augment_views": 0,
        "precision": "fp32",
        "max_steps": 3,
        "vae_hidden": (128, 64),
        "decoder_hidden": 64,
    },
}


def config_from_preset(name: str, **overrides: Any) -> TrainConfig:
    """Build a :class:`TrainConfig` from a preset plus explicit overrides.

    ``None`` overrides are ignored, so CLI flags that were not given keep the preset.
    """
    if name not in PRESETS:
        msg = f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}"
        raise TrainingConfigError(msg)
    values: dict[str, Any] = {**PRESETS[name], "preset": name}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(values.get("weights"), Path):
        values["weights"] = str(values["weights"])
    return TrainConfig(**values)


def preset_for_device(device: str | None = None) -> str:
    """Pick the preset for ``device`` (``cuda`` by free memory; anything else ``cpu``).

    Parameters
    ----------
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``None``/``"auto"``
        (CUDA when available).

    Examples
    --------
    >>> preset_for_device("cpu")
    'cpu'
    """
    import torch

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return "cpu"
    free_b, _total = torch.cuda.mem_get_info(torch.device(device))
    free_gib = free_b / 2**30
    if free_gib >= 60:
        return "80GB"
    if free_gib >= 16:
        return "24GB"
    log.warning(
        "only %.1f GiB free on %s: using the 'cpu' preset sizes", free_gib, device
    )
    return "cpu"
