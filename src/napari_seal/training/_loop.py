"""The body of :func:`napari_seal.training.trainer.iter_train` (preparation + loop)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from napari_seal.errors import TrainingConfigError
from napari_seal.progress import Progress
from napari_seal.training._fold import fold_frozen_batchnorm
from napari_seal.training._prefix import cached_views
from napari_seal.training._state import (
    _evaluate,
    _rng_state,
    _set_rng_state,
    _stop_requested,
    _truncate_metrics,
    _write_final,
    _write_start,
    init_heads,
    keep_torch_threads,
)
from napari_seal.training.events import (
    CheckpointEvent,
    EpochEvent,
    EvalEvent,
    StepEvent,
)

if TYPE_CHECKING:
    from napari_seal.io.sample import SpatialSample
    from napari_seal.training.config import TrainConfig

log = logging.getLogger(__name__)


def _prepare(
    samples: Sequence[SpatialSample], out: Path, config: TrainConfig, *, resume: bool
) -> Generator[Progress, None, tuple]:
    import napari_seal.training.runs as runs
    from napari_seal.models.factory import create_encoder
    from napari_seal.models.registry import get_encoder_spec
    from napari_seal.training.dataset import build_spot_pairs
    from napari_seal.training.expression import DEFAULT_MARKERS, preprocess_sample
    from napari_seal.training.preprocess import GenePanel, build_panel

    if not samples:
        msg = "no training samples were given; pass one or more HEST sample folders"
        raise TrainingConfigError(msg)
    get_encoder_spec(config.encoder)  # an unknown name fails before any work
    total = len(samples) + 2
    preps = []
    for i, s in enumerate(samples):
        preps.append(
            preprocess_sample(
                s, smooth=config.smooth, smooth_radius=config.smooth_radius
            )
        )
        yield Progress(
            stage="prepare",
            done=i + 1,
            total=total,
            unit="steps",
            message=f"expression of {s.name}",
        )
    saved_panel = resume and (out / runs.PANEL).is_file()
    if saved_panel:
        panel = GenePanel.load(out / runs.PANEL)
    else:
        panel = build_panel(
            preps,
            n_hvg=config.n_genes,
            include_genes=config.include_genes,
            markers=DEFAULT_MARKERS if config.markers else None,
            smooth=config.smooth,
            smooth_radius=config.smooth_radius,
        )
    yield Progress(
        stage="prepare",
        done=len(samples) + 1,
        total=total,
        unit="steps",
        message=f"gene panel of {len(panel)} genes",
    )
    torch.manual_seed(config.seed)  # random-init encoders (test-vit) are reproducible
    encoder = create_encoder(config.encoder, weights=config.weights)
    pairs = build_spot_pairs(
        samples,
        panel,
        tile_px=encoder.tile_px,
        mpp=encoder.mpp,
        preprocessed=preps,
        max_missing_fraction=config.max_missing_fraction,
    )
    train_pairs, eval_pairs = pairs.split(config.eval_fraction, seed=config.seed)
    if not saved_panel:
        panel = panel.with_stats(train_pairs.expr)  # z-scores from training spots only
    if config.shuffle_pairs:
        train_pairs = train_pairs.with_shuffled_pairs(seed=config.seed)
    yield Progress(
        stage="prepare",
        done=total,
        total=total,
        unit="steps",
        message=f"{len(pairs)} spot patches",
    )
    return panel, encoder, train_pairs, eval_pairs


def run(
    samples: Sequence[SpatialSample],
    *,
    out: Path,
    config: TrainConfig,
    resume: bool,
    device: torch.device,
) -> Generator[Progress, None, Path]:
    """Prepare, then train; see :func:`napari_seal.training.trainer.iter_train`."""
    import napari_seal.training.runs as runs
    from napari_seal import __version__
    from napari_seal.models.lora import apply_lora, default_lora_spec
    from napari_seal.models.omics import GeneVAE
    from napari_seal.training.augment import augment_batch
    from napari_seal.training.ddp import barrier, dist_info
    from napari_seal.training.losses import clip_loss, in_batch_accuracy, recon_loss
    from napari_seal.training.model import SealModel, autocast_dtype, lr_at
    from napari_seal.training.reference_bank import bank_from_pairs

    dinfo = dist_info()
    if config.batch_size % dinfo.world_size:
        msg = (
            f"batch size {config.batch_size} does not split over {dinfo.world_size} "
            "processes; use a multiple of the process count"
        )
        raise TrainingConfigError(msg)
    with keep_torch_threads():  # scanpy's HVG resets them (see _state.py)
        panel, encoder, train_pairs, eval_pairs = yield from _prepare(
            samples, out, config, resume=resume
        )
    bs = config.batch_size
    if len(train_pairs) < bs:
        msg = (
            f"only {len(train_pairs)} training spots for a batch of {bs}; lower "
            f"--batch-size to at most {len(train_pairs)} (or add samples)"
        )
        raise TrainingConfigError(msg)
    steps_per_epoch = len(train_pairs) // bs
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    lora_overrides = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in (config.lora or {}).items()
    }
    lora_spec = default_lora_spec(encoder, **lora_overrides)
    peft_model = apply_lora(encoder.module, lora_spec)
    omics, decoder = runs.build_heads(config, encoder.embed_dim, len(panel))
    init_heads(omics, decoder, panel.mean, config)
    core = SealModel(peft_model, omics, decoder).to(device)
    # channels-last convolutions: 1.7x faster for EfficientNet-Lite0 on CPU; the frozen
    # BatchNorms folded into their convolutions: another ~1.4x (training copy only)
    core.encoder.to(memory_format=torch.channels_last)
    example = torch.rand(2, 3, encoder.tile_px, encoder.tile_px, device=device)
    n_folded = fold_frozen_batchnorm(
        core.encoder, example.contiguous(memory_format=torch.channels_last)
    )
    log.debug("folded %d frozen BatchNorm layers", n_folded)
    views, offsets, dummy = None, None, None
    if config.augment_views > 0:
        views = yield from cached_views(
            core, train_pairs, lora_spec, config, encoder, device
        )
    if views is not None:
        rng = np.random.default_rng([config.seed, 31337])
        offsets = torch.from_numpy(
            rng.integers(0, config.augment_views, len(train_pairs))
        )
        dummy = torch.zeros(1, 3, encoder.tile_px, encoder.tile_px, device=device)
        dummy = dummy.contiguous(memory_format=torch.channels_last)
    params = [p for p in core.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    aug_gen = torch.Generator().manual_seed(config.seed + 1000 * dinfo.rank + 1)
    pos = {
        "epoch": 0,
        "step_in_epoch": 0,
        "global_step": 0,
        "ep_loss": 0.0,
        "ep_acc": 0.0,
        "ep_steps": 0,
    }
    ckpt = runs.latest_checkpoint(out) if resume else None
    if ckpt is not None:
        tensors, optim_state, rng, state = runs.read_checkpoint(ckpt)
        core.load_trainable_state(tensors)
        opt.load_state_dict(optim_state["optimizer"])
        _set_rng_state(rng, aug_gen, device)
        pos.update({k: state[k] for k in pos if k in state})
        log.info("resuming %s from %s (step %d)", out, ckpt.name, pos["global_step"])
    model = core
    if dinfo.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(
            core, device_ids=[dinfo.local_rank] if device.type == "cuda" else None
        )
    ac_dtype = autocast_dtype(config.precision, device)
    precision = "bf16" if ac_dtype is torch.bfloat16 else "fp32"
    if dinfo.is_main:
        run_info = {
            "napari_seal_version": __version__,
            "format": 1,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "samples": [
                {"name": s.name, "n_spots": s.n_spots, "mpp": s.mpp} for s in samples
            ],
            "encoder": {
                "name": encoder.name,
                "embed_dim": encoder.embed_dim,
                "tile_px": encoder.tile_px,
                "mpp": encoder.mpp,
            },
            "lora_spec": lora_spec.to_dict(),
            "device": str(device),
            "precision": precision,
            "world_size": dinfo.world_size,
            "n_train_spots": len(train_pairs),
            "n_eval_spots": len(eval_pairs) if eval_pairs is not None else 0,
            "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps,
            "n_genes": len(panel),
        }
        _write_start(out, config, panel, run_info)
        (out / runs.DONE).unlink(missing_ok=True)
        _truncate_metrics(out / runs.METRICS, pos["global_step"])
    barrier()
    metrics = (
        (out / runs.METRICS).open("a", encoding="utf-8") if dinfo.is_main else None
    )

    def emit(event: Progress) -> Progress:
        if metrics is not None:
            metrics.write(json.dumps(event.to_dict(), default=str) + "\n")
            metrics.flush()
        return event

    last_ckpt = pos["global_step"] if ckpt is not None else -1

    def save(reason: str) -> CheckpointEvent:
        nonlocal last_ckpt
        tag = (
            f"epoch-{pos['epoch']:03d}"
            if pos["step_in_epoch"] == 0
            else f"epoch-{pos['epoch']:03d}-step-{pos['global_step']:07d}"
        )
        path = out / runs.CHECKPOINTS / tag
        if dinfo.is_main:
            path = runs.write_checkpoint(
                out,
                tag=tag,
                tensors=core.trainable_state(),
                optim={"optimizer": opt.state_dict()},
                rng=_rng_state(aug_gen, device),
                state={**pos, "reason": reason, "total_steps": total_steps},
            )
        last_ckpt = pos["global_step"]
        return CheckpointEvent(
            done=pos["global_step"],
            total=total_steps,
            step=pos["global_step"],
            epoch=pos["epoch"],
            path=str(path),
            reason=reason,
            message=f"checkpoint {tag} ({reason})",
        )

    mean_t = torch.from_numpy(panel.mean).to(device)
    std_t = torch.from_numpy(panel.std).to(device)
    norm = (
        torch.tensor(encoder.mean, device=device).view(1, 3, 1, 1),
        torch.tensor(encoder.std, device=device).view(1, 3, 1, 1),
    )
    rkw = {
        "mean": mean_t,
        "std": std_t,
        "pearson_weight": config.pearson_weight,
        "mse_weight": config.mse_weight,
        "reduction": config.pearson_reduction,
    }
    core.set_train_mode()
    t_epoch = time.perf_counter()
    try:
        while pos["epoch"] < config.epochs and pos["global_step"] < total_steps:
            epoch = pos["epoch"]
            while (
                pos["step_in_epoch"] < steps_per_epoch
                and pos["global_step"] < total_steps
            ):
                idx = train_pairs.batch_index(
                    epoch,
                    pos["step_in_epoch"],
                    batch_size=bs,
                    seed=config.seed,
                    rank=dinfo.rank,
                    world_size=dinfo.world_size,
                )
                feats = None
                if views is not None:
                    tidx = torch.from_numpy(idx)
                    v = (offsets[tidx] + epoch) % config.augment_views
                    feats = views[v, tidx].to(device)
                    x = dummy
                else:
                    images = torch.from_numpy(train_pairs.images[idx])
                    x = augment_batch(
                        images.permute(0, 3, 1, 2),
                        mode=config.augment,
                        generator=aug_gen,
                    )
                    x = (x.to(device) - norm[0]) / norm[1]
                    x = x.contiguous(memory_format=torch.channels_last)
                expr = torch.from_numpy(train_pairs.expr[idx]).to(device)
                lr = lr_at(
                    pos["global_step"],
                    base_lr=config.lr,
                    total_steps=total_steps,
                    warmup_steps=config.warmup_steps,
                )
                for group in opt.param_groups:
                    group["lr"] = lr
                with torch.autocast(
                    device.type,
                    dtype=ac_dtype or torch.float32,
                    enabled=ac_dtype is not None,
                ):
                    z_img, vout, pred = model(x, expr, feats)
                clip, logits = clip_loss(z_img, vout.z, tau=config.tau)
                r_vae, _ = recon_loss(vout.recon, expr, **rkw)
                r_img, _ = recon_loss(pred, expr, **rkw)
                kl = (
                    GeneVAE.kl_divergence(vout)
                    if config.kl_weight > 0
                    else torch.zeros((), device=device)
                )
                loss = (
                    config.clip_weight * clip
                    + config.kl_weight * kl
                    + config.recon_scale
                    * (
                        config.recon_vae_weight * r_vae
                        + config.recon_img_weight * r_img
                    )
                )
                if not torch.isfinite(loss):
                    msg = (
                        f"the loss became {float(loss)} at step {pos['global_step']}; "
                        "lower the learning rate (--lr) or use --precision fp32"
                    )
                    raise TrainingConfigError(msg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                acc = in_batch_accuracy(logits.detach())
                loss_v = float(loss.detach())
                pos["global_step"] += 1
                pos["step_in_epoch"] += 1
                pos["ep_loss"] += loss_v
                pos["ep_acc"] += acc
                pos["ep_steps"] += 1
                yield emit(
                    StepEvent(
                        done=pos["global_step"],
                        total=total_steps,
                        step=pos["global_step"],
                        epoch=epoch,
                        loss=loss_v,
                        clip=float(clip.detach()),
                        recon_vae=float(r_vae.detach()),
                        recon_img=float(r_img.detach()),
                        kl=float(kl.detach()),
                        lr=lr,
                        acc=acc,
                        message=f"epoch {epoch + 1} loss {loss_v:.3f} acc {acc:.0%}",
                    )
                )
                if _stop_requested(out, dinfo, device):
                    event = save("stop")
                    if dinfo.is_main:
                        (out / runs.STOP).unlink(missing_ok=True)
                    yield emit(event)
                    return out
            if pos["step_in_epoch"] < steps_per_epoch:
                break  # max_steps reached inside the epoch
            n_ep = max(1, pos["ep_steps"])
            ep_event = EpochEvent(
                done=pos["global_step"],
                total=total_steps,
                step=pos["global_step"],
                epoch=epoch,
                loss=pos["ep_loss"] / n_ep,
                acc=pos["ep_acc"] / n_ep,
                seconds=time.perf_counter() - t_epoch,
                message=f"epoch {epoch + 1}/{config.epochs} done",
            )
            pos.update(
                epoch=epoch + 1, step_in_epoch=0, ep_loss=0.0, ep_acc=0.0, ep_steps=0
            )
            if eval_pairs is not None and dinfo.is_main:
                metrics_ev = _evaluate(
                    core,
                    eval_pairs,
                    config=config,
                    norm=norm,
                    device=device,
                    ac_dtype=ac_dtype,
                )
                yield emit(
                    EvalEvent(
                        done=pos["global_step"],
                        total=total_steps,
                        step=pos["global_step"],
                        epoch=epoch,
                        metrics=metrics_ev,
                        message=f"held-out acc {metrics_ev['acc']:.0%}",
                    )
                )
            emit(ep_event)  # logged first: a kill before the checkpoint replays it
            ck = save("epoch")
            barrier()
            yield emit(ck)
            yield ep_event
            t_epoch = time.perf_counter()
        if last_ckpt != pos["global_step"]:
            ck = save("final")
            barrier()
            yield emit(ck)
    except GeneratorExit:
        if last_ckpt != pos["global_step"] and pos["global_step"] > 0:
            emit(save("cancel"))
        raise
    finally:
        if metrics is not None:
            metrics.close()
    if dinfo.is_main:
        bank = bank_from_pairs([train_pairs, eval_pairs], panel.genes)
        _write_final(out, core, config, pos, precision, bank)
    barrier()
    yield CheckpointEvent(
        done=pos["global_step"],
        total=total_steps,
        step=pos["global_step"],
        epoch=pos["epoch"],
        path=str(out),
        reason="done",
        message=f"run written to {out}",
    )
    return out

