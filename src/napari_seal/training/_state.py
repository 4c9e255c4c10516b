"""Helpers of the training loop: RNG state, evaluation, run-directory writes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from napari_seal.training.config import TrainConfig
    from napari_seal.training.dataset import SpotPairs
    from napari_seal.training.preprocess import GenePanel


def init_heads(omics, decoder, mean, config: TrainConfig) -> None:
    """Initialisation choices of docs/training.md (``init_decoder_bias``,
    ``vae_logvar_init``).

    - Both decoders' output biases start at the training gene means, so the z-scored
      MSE starts near the genes' variance instead of the squared distance of an
      all-zero prediction from the mean.
    - The VAE's ``fc_logvar`` bias starts at ``vae_logvar_init``: with PyTorch's
      default (~0, posterior sd ~1 in every latent dimension) the reparameterised
      sample is mostly noise, and with the KL term off only the alignment loss shrinks
      it, which takes thousands of steps.
    """
    with torch.no_grad():
        if config.init_decoder_bias:
            m = torch.as_tensor(mean, dtype=torch.float32)
            omics.decoder[-1].bias.copy_(m)
            decoder.net[3].bias.copy_(m)
        if config.vae_logvar_init is not None:
            omics.fc_logvar.bias.fill_(float(config.vae_logvar_init))


@contextlib.contextmanager
def keep_torch_threads() -> Iterator[None]:
    """Restore torch's intra-op thread count after the block.

    scanpy's HVG selection (``build_panel``) runs numba-parallel code whose OpenMP
    pool resets the process's thread count to numba's (the logical CPU count). A
    resumed run loads ``panel.json`` and skips it, so without this the two would
    train with different thread counts, which rounds differently: a resumed run
    would not end with the straight run's weights (issue 7, found by killing runs).
    """
    n = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _rng_state(aug_gen: torch.Generator, device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "aug": aug_gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(
    state: dict[str, Any], aug_gen: torch.Generator, device: torch.device
) -> None:
    torch.set_rng_state(state["torch"])
    aug_gen.set_state(state["aug"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _evaluate(
    core,
    pairs: SpotPairs,
    *,
    config: TrainConfig,
    norm: tuple,
    device: torch.device,
    ac_dtype,
) -> dict[str, float]:
    from napari_seal.training.losses import batch_pearson, clip_loss, in_batch_accuracy

    core.eval()
    zi, zg, preds = [], [], []
    with (
        torch.no_grad(),
        torch.autocast(
            device.type, dtype=ac_dtype or torch.float32, enabled=ac_dtype is not None
        ),
    ):
        for i in range(0, len(pairs), 64):
            img = torch.from_numpy(pairs.images[i : i + 64]).permute(0, 3, 1, 2)
            x = ((img.float() / 255.0).to(device) - norm[0]) / norm[1]
            x = x.contiguous(memory_format=torch.channels_last)
            expr = torch.from_numpy(pairs.expr[i : i + 64]).to(device)
            z = core.encoder(x)
            zi.append(z.float())
            preds.append(core.decoder(z).float())
            zg.append(core.omics.encode(expr).float())
    core.set_train_mode()
    img_z, gene_z = torch.cat(zi), torch.cat(zg)
    clip, logits = clip_loss(img_z, gene_z, tau=config.tau, gather=False)
    target = torch.from_numpy(pairs.expr).to(device)
    r = batch_pearson(torch.cat(preds), target)
    return {
        "clip": float(clip),
        "acc": in_batch_accuracy(logits),
        "pearson_img": float(r.mean()),
        "n_spots": len(pairs),
    }


def _write_start(out: Path, config: TrainConfig, panel: GenePanel, info: dict) -> None:
    import napari_seal.training.runs as runs
    from napari_seal.io.atomic import ensure_writable_dir

    ensure_writable_dir(out)
    runs.write_json(out / runs.CONFIG, config.to_dict())
    runs.write_json(out / runs.RUN_INFO, info)
    if not (out / runs.PANEL).is_file():
        panel.save(out / runs.PANEL)


def _truncate_metrics(path: Path, step: int) -> None:
    from napari_seal.io.atomic import atomic_write_text

    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                keep.append(line)
        except (ValueError, json.JSONDecodeError):
            continue
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def _stop_requested(out: Path, dinfo, device: torch.device) -> bool:
    import napari_seal.training.runs as runs

    flag = (out / runs.STOP).exists() if dinfo.is_main else False
    if dinfo.distributed:
        import torch.distributed as dist

        t = torch.tensor(
            [1.0 if flag else 0.0], device=device if device.type == "cuda" else "cpu"
        )
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        flag = bool(t.item() > 0)
    return flag


def _write_final(
    out: Path, core, config: TrainConfig, pos: dict, precision: str, bank=None
) -> None:
    import napari_seal.training.runs as runs
    from napari_seal.models.lora import save_adapters
    from napari_seal.training.reference_bank import write_bank

    save_adapters(core.encoder, out, encoder_name=config.encoder)
    if bank is not None:
        write_bank(out, bank)
    heads = {f"omics.{k}": v for k, v in core.omics.state_dict().items()}
    heads.update({f"decoder.{k}": v for k, v in core.decoder.state_dict().items()})
    runs._save_tensors(out / runs.HEADS, heads)
    runs.write_json(
        out / runs.DONE,
        {
            "global_step": pos["global_step"],
            "epochs": pos["epoch"],
            "precision": precision,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
