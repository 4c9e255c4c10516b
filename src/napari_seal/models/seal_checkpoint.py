"""Official SEAL release checkpoints: ``seal_<backbone>_vision.pth`` / ``_omics.pth``.

Vision file layout (``reference/seal_method.md`` 2.2, 6). Keys are those of SEAL's
``PatchRecEncoder`` under DDP, the backbone wrapped by peft:

* ``module.encoder.base_model.model.<layer>.lora_A.<adapter>.weight`` ``(r, in)`` and
  ``...lora_B.<adapter>.weight`` ``(out, r)`` - the adapters (SEAL-UNI2:
  ``blocks.{21,22,23}.{attn.qkv,attn.proj,mlp.fc1,mlp.fc2}``; SEAL-CONCH:
  ``trunk.blocks.11.*``);
* optionally the frozen base weights, ``...<layer>.base_layer.weight`` for adapted
  layers and ``...<name>`` for the others (a "full" file). A file with adapters only
  needs the base model's own weight file (``base_weights=``);
* other keys outside ``module.encoder.`` (image->gene decoder, projection head) are
  returned as ``heads``, never silently dropped.

The leading ``module.`` is optional. For CONCH, a ``visual.`` after
``base_model.model.`` is accepted: base weights then go through the registry's CONCH
rule (keep ``visual.*``, drop the text tower). Everything is strict: the adapted
layers and the number of adapted blocks are READ FROM THE KEYS and every adapter in the
file is applied (the official loader builds LoRA on ``partial_blocks`` from its global
config and loads with ``strict=False``, silently dropping the UNI2 block 21-22
adapters); a missing or unexpected key is a
:class:`~napari_seal.errors.CheckpointError` naming it. Base weights
given both in the file and by ``base_weights`` must be equal (the base is frozen).

LoRA scaling: the file stores ``r`` (from ``lora_A``'s shape) but not alpha; SEAL's
config uses ``lora_alpha = 8`` (scaling alpha / r = 1), the default here.

Omics file: a ``GeneVAE`` state dict (:mod:`napari_seal.models.omics`), possibly under a
``module.`` and one more prefix; sizes (genes, latent, hidden widths, flows) are read
from the tensor shapes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from napari_seal.errors import CheckpointError, WeightsError

__all__ = [
    "OfficialSeal",
    "SealVisionKeys",
    "backbone_from_filename",
    "check_lora_shapes",
    "decoder_from_heads",
    "load_official_omics",
    "load_official_seal",
    "parse_seal_vision_keys",
]

log = logging.getLogger(__name__)
_LORA = re.compile(r"^(?P<layer>.+)\.lora_(?P<ab>[AB])\.(?P<adapter>[^.]+)\.weight$")
_BASE = re.compile(r"^(?P<layer>.+)\.base_layer\.(?P<param>\w+)$")
_PEFT = "base_model.model."
_SEAL_LORA_ALPHA = 8.0
_SEAL_LORA_DROPOUT = 0.15


@dataclass
class SealVisionKeys:
    """A SEAL vision checkpoint split into its parts (module names, no prefixes)."""

    lora_a: dict[str, torch.Tensor] = field(default_factory=dict)
    lora_b: dict[str, torch.Tensor] = field(default_factory=dict)
    base: dict[str, torch.Tensor] = field(default_factory=dict)
    heads: dict[str, torch.Tensor] = field(default_factory=dict)
    adapter_name: str = "default"

    @property
    def layers(self) -> list[str]:
        """Adapted layer names, sorted."""
        return sorted(self.lora_a)

    @property
    def rank(self) -> int:
        """LoRA rank ``r`` (rows of ``lora_A``)."""
        return int(next(iter(self.lora_a.values())).shape[0])


def backbone_from_filename(path: str | Path) -> str | None:
    """``seal_univ2_vision.pth`` -> ``"univ2"`` (``None`` when the name has no key)."""
    m = re.match(r"^seal_(.+?)_(vision|omics)\.", Path(path).name)
    return m[1] if m else None


def parse_seal_vision_keys(state: dict[str, torch.Tensor]) -> SealVisionKeys:
    """Split a SEAL vision state dict into adapters, base weights and heads.

    Raises
    ------
    CheckpointError
        When the file holds no peft-wrapped encoder, several adapter names, or a layer
        with only one of ``lora_A``/``lora_B``.
    """
    bad = (
        [type(state).__name__]
        if not isinstance(state, dict)
        else [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    )
    if bad:
        msg = (
            f"the SEAL checkpoint is not a plain dict of tensors ({bad[:3]} are not "
            "tensors); pass an official seal_<backbone>_vision.pth file"
        )
        raise CheckpointError(msg)
    out = SealVisionKeys()
    adapters: set[str] = set()
    n_encoder = 0
    for key, value in state.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        if not k.startswith("encoder."):
            out.heads[k] = value
            continue
        n_encoder += 1
        k = k[len("encoder.") :]
        if not k.startswith(_PEFT):
            msg = (
                f"key {key!r} is not a LoRA-wrapped encoder weight "
                f"(expected module.encoder.{_PEFT}...); "
                "this is not a SEAL LoRA checkpoint"
            )
            raise CheckpointError(msg)
        k = k[len(_PEFT) :]
        m = _LORA.match(k)
        if m:
            adapters.add(m["adapter"])
            layer = m["layer"].removeprefix("visual.")
            (out.lora_a if m["ab"] == "A" else out.lora_b)[layer] = value
            continue
        m = _BASE.match(k)
        out.base[f"{m['layer']}.{m['param']}" if m else k] = value
    if n_encoder == 0 or not out.lora_a and not out.lora_b:
        msg = (
            "this file holds no LoRA adapters under module.encoder.base_model.model; "
            "pass a seal_<backbone>_vision.pth file"
        )
        raise CheckpointError(msg)
    if len(adapters) > 1:
        msg = f"the checkpoint holds several adapters {sorted(adapters)}; expected one"
        raise CheckpointError(msg)
    out.adapter_name = adapters.pop()
    only_a = sorted(set(out.lora_a) - set(out.lora_b))
    only_b = sorted(set(out.lora_b) - set(out.lora_a))
    if only_a or only_b:
        msg = (
            f"incomplete adapters: lora_B missing for {only_a[:10]}, lora_A missing "
            f"for {only_b[:10]}; the checkpoint is damaged"
        )
        raise CheckpointError(msg)
    ranks = {int(a.shape[0]) for a in out.lora_a.values()}
    if len(ranks) != 1:
        msg = f"adapters with different ranks {sorted(ranks)}; expected one LoRA rank"
        raise CheckpointError(msg)
    return out


def adapted_blocks(layers: list[str], block_regex: str) -> list[tuple[int, ...]]:
    """Distinct block indices (regex groups) of the adapted layers, sorted."""
    rx = re.compile(block_regex)
    return sorted(
        {tuple(int(g) for g in m.groups()) for n in layers if (m := rx.search(n))}
    )


def check_lora_shapes(module: torch.nn.Module, keys: SealVisionKeys) -> None:
    """Check that every adapted layer exists and its adapters fit its shape.

    Works on a meta-device module (only shapes are read).
    """
    mods = dict(module.named_modules())
    absent = [n for n in keys.layers if n not in mods]
    if absent:
        msg = (
            f"{len(absent)} adapted layers do not exist in this backbone "
            f"(first: {absent[:10]}); the checkpoint is for another backbone"
        )
        raise CheckpointError(msg)
    bad = []
    for name in keys.layers:
        w = getattr(mods[name], "weight", None)
        if w is None:
            bad.append(f"{name} (no weight)")
            continue
        a, b = keys.lora_a[name], keys.lora_b[name]
        # Linear: A (r, in), B (out, r); Conv: A (r, in, kh, kw), B (out, r, 1, 1)
        if a[0].numel() != w[0].numel() or int(b.shape[0]) != int(w.shape[0]):
            bad.append(
                f"{name}: lora_A {list(a.shape)}, lora_B {list(b.shape)} vs "
                f"layer {list(w.shape)}"
            )
    if bad:
        msg = f"{len(bad)} adapters do not fit their layers: {bad[:10]}"
        raise CheckpointError(msg)


@dataclass
class OfficialSeal:
    """An official SEAL release loaded into napari-seal.

    Attributes
    ----------
    encoder
        The backbone with every adapter of the file applied (merged into the weights
        unless ``merge=False``, then ``encoder.module`` is the peft model): a drop-in
        replacement for the base encoder.
    lora_spec
        Rank, alpha and targets as read from the keys.
    target_names
        The adapted layers.
    adapted_blocks
        Block indices read from the keys (UNI2: ``[21, 22, 23]``).
    kind
        ``"full"`` (base weights in the file) or ``"adapters"``.
    heads
        Tensors outside the encoder (decoder / projection head), as named in the file.
    decoder
        The image->gene decoder found among ``heads`` (:func:`decoder_from_heads`), or
        ``None``.
    omics
        The omics ``GeneVAE`` when an omics file was given.
    """

    encoder: Any
    lora_spec: Any
    target_names: list[str]
    adapted_blocks: list[int]
    kind: str
    heads: dict[str, torch.Tensor]
    decoder: Any = None
    omics: Any = None
    source: Path | None = None


def decoder_from_heads(heads: dict[str, torch.Tensor], embed_dim: int):
    """Build SEAL's ``ImgEmbDecoder`` (D -> hidden -> G) from checkpoint head tensors.

    Rule: group the head keys by their first name component; a group is the decoder
    when it holds exactly two 2-D weights, in key order ``(hidden, D)`` then
    ``(G, hidden)``, each with its bias. Returns ``None`` unless exactly one group
    fits (the file's head names are not documented, so nothing is guessed further).
    """
    from napari_seal.models.decoder import ImgEmbDecoder

    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in heads.items():
        groups.setdefault(key.split(".", 1)[0], {})[key] = value
    found = []
    for tensors in groups.values():
        mats = [k for k, v in tensors.items() if v.ndim == 2 and k.endswith(".weight")]
        if len(mats) != 2 or len(tensors) != 4:
            continue
        w1, w2 = (tensors[k] for k in mats)
        b1 = tensors.get(mats[0][: -len("weight")] + "bias")
        b2 = tensors.get(mats[1][: -len("weight")] + "bias")
        if b1 is None or b2 is None or w1.shape[1] != embed_dim:
            continue
        if w2.shape[1] != w1.shape[0]:
            continue
        found.append((w1, b1, w2, b2))
    if len(found) != 1:
        return None
    w1, b1, w2, b2 = found[0]
    dec = ImgEmbDecoder(embed_dim, int(w2.shape[0]), hidden=int(w1.shape[0]))
    dec.net[0].load_state_dict({"weight": w1, "bias": b1})
    dec.net[3].load_state_dict({"weight": w2, "bias": b2})
    return dec.eval()


def _resolve_backbone(vision: Path, backbone: str | None):
    from napari_seal.models.registry import get_encoder_spec

    key = backbone or backbone_from_filename(vision)
    if key is None:
        msg = (
            f"cannot tell the backbone of {vision.name}; pass backbone= (conch, univ2, "
            "h0mini, phikonv2, virchow2 or a registry name)"
        )
        raise CheckpointError(msg)
    return get_encoder_spec(key)


def _check_same_base(
    spec, module: torch.nn.Module, base: dict[str, torch.Tensor]
) -> None:
    from napari_seal.models.weights import adapt_state_dict

    base = adapt_state_dict(spec, dict(base))
    own = module.state_dict()
    unexpected = [k for k in base if k not in own]
    differ = [
        k
        for k, v in base.items()
        if k in own
        and (
            tuple(v.shape) != tuple(own[k].shape)
            or not torch.allclose(v.float(), own[k].float(), rtol=1e-3, atol=1e-5)
        )
    ]
    if unexpected or differ:
        msg = (
            f"the checkpoint's base weights do not match base_weights: "
            f"{len(unexpected)} unknown keys {unexpected[:10]}, "
            f"{len(differ)} different "
            f"tensors {differ[:10]}; pass the base model the checkpoint was trained on"
        )
        raise CheckpointError(msg)


def load_official_seal(
    vision: str | Path,
    *,
    backbone: str | None = None,
    base_weights: str | Path | None = None,
    omics: str | Path | None = None,
    alpha: float = _SEAL_LORA_ALPHA,
    merge: bool = True,
    device: Any = None,
) -> OfficialSeal:
    """Load ``seal_<backbone>_vision.pth`` (and optionally ``_omics.pth``) strictly.

    Parameters
    ----------
    vision
        The vision checkpoint.
    backbone
        SEAL key (``univ2``) or registry name; default: read from the file name.
    base_weights
        The base model's weight file; required when the checkpoint holds adapters only.
    omics
        Optional ``seal_<backbone>_omics.pth``.
    alpha
        LoRA alpha (not stored in the file; SEAL uses 8).
    merge
        Fold the adapters into the weights (plain module, faster inference).
    device
        Where to put the encoder.
    """
    from peft import get_peft_model_state_dict

    from napari_seal.models import lora as lora_mod
    from napari_seal.models import weights as wmod
    from napari_seal.models.factory import build_and_load, create_encoder, wrap_module
    from napari_seal.models.registry import get_builder

    vision = Path(vision).expanduser()
    spec = _resolve_backbone(vision, backbone)
    keys = parse_seal_vision_keys(wmod.load_state_dict_file(vision, unwrap=False))
    blocks = adapted_blocks(keys.layers, spec.lora_block_regex)
    if base_weights is not None:
        encoder = create_encoder(spec.name, weights=base_weights)
        if keys.base:
            _check_same_base(spec, encoder.module, keys.base)
    elif keys.base:
        try:
            module = build_and_load(
                spec, get_builder(spec.name), keys.base, source=vision
            )
        except CheckpointError:
            raise
        except WeightsError as err:
            msg = f"the base weights inside the SEAL checkpoint are incomplete: {err}"
            raise CheckpointError(msg) from err
        encoder = wrap_module(spec, module.eval(), weights=vision)
    else:
        msg = (
            f"{vision.name} holds only the LoRA adapters; pass the base model's "
            "weights "
            f"as base_weights (--weights FILE): {spec.weights_from}"
        )
        raise CheckpointError(msg)
    check_lora_shapes(encoder.module, keys)
    suffixes = sorted({_suffix(n, spec.lora_block_regex) for n in keys.layers})
    lspec = lora_mod.LoraSpec(
        r=keys.rank,
        alpha=alpha,
        dropout=_SEAL_LORA_DROPOUT,
        target_modules=tuple(suffixes),
        last_n_blocks=max(1, len(blocks)),
        block_regex=spec.lora_block_regex,
    )
    model = lora_mod.apply_lora(encoder.module, lspec, target_names=keys.layers)
    file_lora = {f"{_PEFT}{n}.lora_A.weight": t for n, t in keys.lora_a.items()}
    file_lora.update({f"{_PEFT}{n}.lora_B.weight": t for n, t in keys.lora_b.items()})
    diff = wmod.diff_state_dict(get_peft_model_state_dict(model), file_lora)
    if diff:
        msg = (
            f"the adapters in {vision.name} do not fit {spec.name!r}: {diff.describe()}"
        )
        raise CheckpointError(msg)
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, file_lora)
    if getattr(result, "unexpected_keys", None):
        msg = f"peft did not load {result.unexpected_keys[:10]} from {vision.name}"
        raise CheckpointError(msg)
    encoder.module = (lora_mod.merge_lora(model) if merge else model).eval()
    if device is not None:
        encoder.module.to(device)
    log.info(
        "SEAL %s: %d adapted layers in blocks %s (%s checkpoint)",
        spec.name,
        len(keys.layers),
        [b[0] if len(b) == 1 else b for b in blocks],
        "full" if keys.base else "adapters-only",
    )
    return OfficialSeal(
        encoder=encoder,
        lora_spec=lspec,
        target_names=keys.layers,
        adapted_blocks=[b[0] if len(b) == 1 else b for b in blocks],
        kind="full" if keys.base else "adapters",
        heads=keys.heads,
        decoder=decoder_from_heads(keys.heads, spec.embed_dim),
        omics=load_official_omics(omics) if omics is not None else None,
        source=vision,
    )


def _suffix(name: str, block_regex: str) -> str:
    m = re.search(block_regex, name)
    return name[m.end() :] if m else name


def load_official_omics(path: str | Path):
    """Load ``seal_<backbone>_omics.pth`` into a ``GeneVAE`` (sizes from the shapes)."""
    from napari_seal.models import weights as wmod

    try:
        from napari_seal.models.omics import GeneVAE
    except ImportError as err:
        msg = "the omics model (napari_seal.models.omics) is missing from this install"
        raise CheckpointError(msg) from err
    state = wmod.load_state_dict_file(path)
    anchor = next(
        (
            k
            for k in state
            if k.endswith("encoder.0.weight") and not k.endswith("decoder.0.weight")
        ),
        None,
    )
    if anchor is None:
        msg = f"{Path(path).name} holds no GeneVAE weights (no encoder.0.weight key)"
        raise CheckpointError(msg)
    prefix = anchor[: -len("encoder.0.weight")]
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    hidden = tuple(
        int(v.shape[0])
        for k, v in state.items()
        if re.fullmatch(r"encoder\.\d+\.weight", k) and v.ndim == 2
    )
    n_flows = len({k.split(".")[1] for k in state if k.startswith("flows.")})
    try:
        vae = GeneVAE(
            int(state["encoder.0.weight"].shape[1]),
            int(state["fc_mu.weight"].shape[0]),
            hidden=hidden,
            n_flows=n_flows,
        )
        wmod.load_weights_strict(vae, state, source=path)
    except (KeyError, WeightsError) as err:
        msg = f"{Path(path).name} does not fit napari-seal's GeneVAE: {err}"
        raise CheckpointError(msg) from err
    return vae.eval()
