"""SEAL run directories: what ``napari-seal train`` writes and :func:`load_run` reads.

Layout (documented in ``docs/formats.md``)::

    RUN/
      config.json            TrainConfig.to_dict()
      run.json               version, samples, encoder, device, precision, world size
      panel.json             GenePanel: genes, z-score mean/std, sources, preprocessing
      metrics.jsonl          one training event per line (StepEvent, EpochEvent, ...)
      checkpoints/epoch-003/ resume state (the last two are kept)
          trainable.safetensors  LoRA + omics VAE + image decoder (weights, buffers)
          optim.pt               AdamW state (torch.save; read with weights_only=True)
          rng.pt                 CPU/CUDA RNG and the augmentation generator state
          state.json             epoch, step in epoch, global step, reason
      adapter.safetensors    final LoRA adapters (napari_seal.models.lora format)
      lora_spec.json         LoraSpec + exact target layer names + encoder name
      heads.safetensors      final omics VAE ("omics.*") and image decoder ("decoder.*")
      reference.npz          the training spots' expression (reference_bank.py)
      DONE                   written last: the run is complete (JSON summary)

:func:`export_run` writes a compact copy (no checkpoints; heads stored as fp16 and
upcast to fp32 by :func:`load_run`; ``run.json["storage"]`` says so): the shipped model.

Every file is written atomically (temporary name + rename); a checkpoint folder is
written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_seal.errors import CheckpointError, OutputPathError, SealError
from napari_seal.models.lora import ADAPTER_FILE, SPEC_FILE
from napari_seal.training.reference_bank import BANK

if TYPE_CHECKING:
    import torch

    from napari_seal.models.decoder import ImgEmbDecoder
    from napari_seal.models.factory import Encoder
    from napari_seal.models.omics import GeneVAE
    from napari_seal.training.config import TrainConfig
    from napari_seal.training.preprocess import GenePanel
    from napari_seal.training.reference_bank import ReferenceBank

__all__ = [
    "adapter_hash",
    "CHECKPOINTS",
    "DONE",
    "SealRun",
    "check_output_dir",
    "export_run",
    "is_run_dir",
    "latest_checkpoint",
    "load_run",
    "read_checkpoint",
    "write_checkpoint",
]

CONFIG = "config.json"
RUN_INFO = "run.json"
PANEL = "panel.json"
METRICS = "metrics.jsonl"
HEADS = "heads.safetensors"
DONE = "DONE"
CHECKPOINTS = "checkpoints"
STOP = "STOP"
ADAPTER = ADAPTER_FILE  # the final LoRA adapters (napari_seal.models.lora format)
LORA_SPEC = SPEC_FILE


def adapter_hash(run: str | Path) -> str | None:
    """sha256 of a run's final adapter files (``"a:b"``); None without adapters.

    The embedding store records it, so a store made with a run is recognised after
    the run folder is copied or moved.
    """
    import hashlib

    files = [Path(run) / ADAPTER, Path(run) / LORA_SPEC]
    if not files[0].is_file():
        return None
    out = []
    for f in files:
        if f.is_file():
            h = hashlib.sha256()
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out.append(h.hexdigest())
    return ":".join(out)


def is_run_dir(path: str | Path) -> bool:
    """True when ``path`` looks like a run directory (has ``config.json``)."""
    return (Path(path) / CONFIG).is_file()


def check_output_dir(out: str | Path, *, resume: bool) -> Path:
    """Check, without creating anything, that ``out`` can hold a (new) run.

    Raises
    ------
    OutputPathError
        When ``out`` is a file, an existing non-empty folder (without ``resume``), or
        inside a folder that cannot be written.
    """
    from napari_seal.io.atomic import checked_output_path

    out = checked_output_path(out).expanduser()
    if out.exists() and not out.is_dir():
        msg = f"--out {out} is a file; give a folder for the run"
        raise OutputPathError(msg)
    if out.is_dir() and any(out.iterdir()) and not resume:
        msg = (
            f"run directory {out} already exists and is not empty; pass --resume to "
            "continue it or choose another --out"
        )
        raise OutputPathError(msg)
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        msg = (
            f"cannot write the run directory {out}: {probe} is not writable; "
            "choose another --out"
        )
        raise OutputPathError(msg)
    return out


def remove_stale_leftovers(out: str | Path) -> list[Path]:
    """Remove the temporaries a killed run left in run folder ``out``; return them.

    Half-written checkpoints (``checkpoints/.tmp-<tag>-<pid>``) and atomic-write
    temporaries (``.<file>.tmp-<pid>-<random>``) of processes that are gone
    (:func:`napari_seal.io.atomic.remove_stale_temporaries`); nothing else.
    """
    from napari_seal.io.atomic import remove_stale_temporaries

    out = Path(out).expanduser()
    if not out.is_dir():
        return []
    return remove_stale_temporaries(out) + remove_stale_temporaries(out / CHECKPOINTS)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    from napari_seal.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from napari_seal.io.atomic import atomic_path

    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(clean, str(tmp))


def write_checkpoint(
    out: Path,
    *,
    tag: str,
    tensors: dict[str, torch.Tensor],
    optim: dict[str, Any],
    rng: dict[str, Any],
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``checkpoints/<tag>/`` atomically; keep the newest ``keep`` checkpoints."""
    import torch

    root = out / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / tag
    tmp = root / f".tmp-{tag}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        _save_tensors(tmp / "trainable.safetensors", tensors)
        torch.save(optim, tmp / "optim.pt")
        torch.save(rng, tmp / "rng.pt")
        write_json(tmp / "state.json", state)
        if final.exists():
            shutil.rmtree(final)
        tmp.replace(final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        msg = (
            f"cannot write checkpoint {final}: {err}; free disk space or check "
            "permissions"
        )
        raise OutputPathError(msg) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ckpts = sorted(_checkpoints(out), key=lambda c: c[0])
    for _, path in ckpts[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    root = Path(out) / CHECKPOINTS
    found = []
    if root.is_dir():
        for d in root.iterdir():
            state = d / "state.json"
            if d.is_dir() and not d.name.startswith(".") and state.is_file():
                try:
                    step = int(json.loads(state.read_text())["global_step"])
                except (ValueError, KeyError, json.JSONDecodeError):
                    continue
                found.append((step, d))
    return found


def latest_checkpoint(out: str | Path) -> Path | None:
    """The checkpoint folder with the highest global step, or ``None``."""
    ckpts = _checkpoints(Path(out))
    return max(ckpts, key=lambda c: c[0])[1] if ckpts else None


def read_checkpoint(path: Path) -> tuple[dict, dict, dict, dict]:
    """Read ``(tensors, optim, rng, state)`` of a checkpoint (safe loads only)."""
    import pickle

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path / "trainable.safetensors"))
        optim = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
        rng = torch.load(path / "rng.pt", map_location="cpu", weights_only=True)
        state = json.loads((path / "state.json").read_text())
    except (
        OSError,
        RuntimeError,
        ValueError,
        EOFError,
        SafetensorError,
        pickle.UnpicklingError,
    ) as err:
        msg = (
            f"checkpoint {path} is unreadable ({err}); delete it to resume from an "
            "older one"
        )
        raise CheckpointError(msg) from err
    return tensors, optim, rng, state


def split_prefixed(tensors: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``tensors`` under ``prefix.`` with the prefix removed."""
    p = prefix + "."
    return {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}


@dataclass
class SealRun:
    """A finished SEAL run, ready for inference.

    Attributes
    ----------
    path
        The run directory.
    config
        Its :class:`~napari_seal.training.config.TrainConfig`.
    panel
        Its gene panel (genes, z-score statistics, preprocessing).
    encoder
        The base encoder with the LoRA adapters merged into its weights: a drop-in
        replacement of ``create_encoder(config.encoder)`` (same ``embed_dim``, tile
        size,
        transform), in eval mode.
    omics
        The omics VAE (eval mode): ``omics.encode(expr)`` embeds panel-space expression.
    decoder
        The image-embedding -> expression decoder (eval mode).
    info
        ``run.json`` content.
    bank
        The training spots' expression (``reference.npz``; None for older runs).
    """

    path: Path
    config: TrainConfig
    panel: GenePanel
    encoder: Encoder
    omics: GeneVAE
    decoder: ImgEmbDecoder
    info: dict[str, Any]
    bank: ReferenceBank | None = None

    @property
    def genes(self) -> tuple[str, ...]:
        """Panel genes in model order."""
        return self.panel.genes

    def encode_query(self, expr: np.ndarray) -> np.ndarray:
        """Embed expression profiles with the omics encoder (deterministic).

        Parameters
        ----------
        expr
            ``(n, G)`` or ``(G,)`` log-normalised expression in panel order (as
            ``panel.expression(sample)`` returns).

        Returns
        -------
        ``(n, D)`` float32 embeddings in the image embedding space (not normalised).
        """
        import torch

        x = np.atleast_2d(np.asarray(expr, dtype=np.float32))
        if x.shape[1] != len(self.panel):
            msg = (
                f"expression has {x.shape[1]} columns but the run's panel has "
                f"{len(self.panel)} genes; map it with run.panel.expression(...)"
            )
            raise CheckpointError(msg)
        dev = next(self.omics.parameters()).device
        with torch.no_grad():
            z = self.omics.encode(torch.from_numpy(x).to(dev))
        return z.float().cpu().numpy()

    def predict_expression(self, embeddings: np.ndarray) -> np.ndarray:
        """Decode image embeddings ``(n, D)`` into panel expression ``(n, G)``."""
        import torch

        e = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
        dev = next(self.decoder.parameters()).device
        with torch.no_grad():
            y = self.decoder(torch.from_numpy(e).to(dev))
        return y.float().cpu().numpy()


def build_heads(config: TrainConfig, embed_dim: int, n_genes: int):
    """Build the omics VAE and image decoder that ``config`` describes."""
    from napari_seal.models.decoder import ImgEmbDecoder
    from napari_seal.models.omics import GeneVAE

    omics = GeneVAE(
        n_genes,
        embed_dim,
        hidden=config.vae_hidden,
        n_flows=config.n_flows,
        dropout=config.vae_dropout,
    )
    decoder = ImgEmbDecoder(embed_dim, n_genes, config.decoder_hidden)
    return omics, decoder


def export_run(
    run: str | Path, out: str | Path, *, heads_dtype: str = "float16"
) -> Path:
    """Write a compact, loadable copy of finished run ``run`` to new folder ``out``.

    Config, panel, metrics, LoRA adapters (as they are) and the heads cast to
    ``heads_dtype`` (``"float16"`` halves the VAE, most of a run's bytes);
    no checkpoints (it cannot be resumed). :func:`load_run` upcasts the heads.
    """
    import torch
    from safetensors.torch import load_file

    src, out = Path(run).expanduser(), check_output_dir(out, resume=False)
    if not (src / DONE).is_file():
        msg = f"run {src} is incomplete (no {DONE}); finish it before exporting"
        raise CheckpointError(msg)
    dtype = {"float16": torch.float16, "float32": torch.float32}.get(heads_dtype)
    if dtype is None:
        msg = f"heads_dtype must be 'float16' or 'float32', got {heads_dtype!r}"
        raise ValueError(msg)
    out.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG, PANEL, METRICS, ADAPTER, LORA_SPEC, BANK):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    heads = load_file(str(src / HEADS))
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in heads.items()}
    _save_tensors(out / HEADS, cast)
    info_file = src / RUN_INFO
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    info["storage"] = {"heads_dtype": heads_dtype, "checkpoints": False}
    write_json(out / RUN_INFO, info)
    write_json(out / DONE, {**json.loads((src / DONE).read_text()), "exported": True})
    return out


def load_run(path: str | Path, *, device: Any = None, merge: bool = True) -> SealRun:
    """Load a finished run: merged encoder, omics VAE, decoder, panel and config.

    Parameters
    ----------
    path
        The run directory.
    device
        Where to put the modules (default CPU).
    merge
        Merge the LoRA adapters into the encoder weights (``False`` keeps the peft
        model, for tests and further training).

    Raises
    ------
    CheckpointError
        When the run is incomplete (no ``DONE``: still training, cancelled or failed;
        resume it with ``napari-seal train ... --resume``) or a file is missing.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from napari_seal.models.factory import create_encoder
    from napari_seal.models.lora import load_adapters, merge_lora
    from napari_seal.training.config import TrainConfig
    from napari_seal.training.preprocess import GenePanel
    from napari_seal.training.reference_bank import load_bank

    run = Path(path).expanduser()
    if not is_run_dir(run):
        msg = (
            f"{run} is not a SEAL run directory (no {CONFIG}); give the --out of a "
            "train run"
        )
        raise CheckpointError(msg)
    if not (run / DONE).is_file():
        msg = (
            f"run {run} is incomplete (no {DONE} marker): it is still training or was "
            "stopped; finish it with `napari-seal train ... --out RUN --resume`"
        )
        raise CheckpointError(msg)
    for name in (PANEL, HEADS):
        if not (run / name).is_file():
            msg = f"run {run} lacks {name}; the run directory is damaged, retrain it"
            raise CheckpointError(msg)
    try:
        config = TrainConfig.from_dict(json.loads((run / CONFIG).read_text()))
        info = (
            json.loads((run / RUN_INFO).read_text())
            if (run / RUN_INFO).is_file()
            else {}
        )
        panel = GenePanel.load(run / PANEL)
    except SealError:
        raise
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError, bad text
        msg = (
            f"run {run} has an unreadable {CONFIG}, {RUN_INFO} or {PANEL} ({err}); "
            "the run directory is damaged: restore it or retrain"
        )
        raise CheckpointError(msg) from err
    torch.manual_seed(
        config.seed
    )  # random-init base encoders (test-vit) rebuild identically
    encoder = create_encoder(config.encoder, weights=config.weights)
    peft_model = load_adapters(encoder.module, run)
    encoder.module = merge_lora(peft_model) if merge else peft_model
    encoder.module.eval()
    omics, decoder = build_heads(config, encoder.embed_dim, len(panel))
    try:
        heads = load_file(str(run / HEADS))
    except (SafetensorError, OSError) as err:  # e.g. a pickle renamed: never unpickled
        msg = f"{run / HEADS} is not a readable safetensors file ({err}); retrain it"
        raise CheckpointError(msg) from err
    # heads stored in fp16 (export_run) are upcast: the modules compute in fp32
    heads = {k: v.float() if v.is_floating_point() else v for k, v in heads.items()}
    for name, mod in (("omics", omics), ("decoder", decoder)):
        sub = split_prefixed(heads, name)
        try:
            mod.load_state_dict(sub, strict=True)
        except RuntimeError as err:
            msg = f"{run / HEADS} does not fit the run's config ({name}): {err}"
            raise CheckpointError(msg) from err
        mod.eval()
    if device is not None:
        encoder.module.to(device)
        omics.to(device)
        decoder.to(device)
    bank = load_bank(run, panel.genes)
    return SealRun(run, config, panel, encoder, omics, decoder, info, bank)
