"""The GPU path measured (issue 14): UNI2-h-size inference, ``embed``, one SEAL step.

Prepared for a CUDA machine (a few minutes of GPU time); ``--smoke`` runs the same
code on the CPU with the tiny ``test-vit`` encoder in well under a minute (CI).

1. The encoder's exact architecture (registry ``uni2-h``) with random weights, saved
   to a safetensors file and loaded back through ``create_encoder(name,
   weights=FILE)``: the path a user's downloaded weights take.
2. Model-only, bf16, batch 256: tiles/s (a) of the module on a batch already on the
   GPU and (b) of :class:`~napari_seal.models.inference.InferenceSession` from
   uint8 tiles in host memory (pinned copy, normalisation on the GPU); FLOPs per
   tile (``torch.utils.flop_counter``) give the achieved TFLOP/s, compared with the
   card's bf16 dense peak (table below, by device name).
3. ``embed`` end-to-end on a generated pyramidal JPEG TIFF vs model-only (b): decode
   threads, pinned memory, non-blocking copies must keep up (goal >= 0.9).
4. One SEAL training step of the ``80GB`` preset (LoRA on the encoder, omics VAE,
   decoder; batch as the preset says) on synthetic tiles: step time, peak GPU
   memory, and whether it fits (an out-of-memory error is reported, not raised).

Usage::

    python benchmarks/bench_gpu.py [--encoder uni2-h] [--batch-size 256]
        [--slide-px 16384] [--max-tiles 4096] [--read-workers 8] [--json OUT.json]
    python benchmarks/bench_gpu.py --smoke      # CPU, test-vit, < 60 s
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: bf16 dense (no sparsity) tensor-core peaks in TFLOP/s, from NVIDIA's data sheets;
#: matched against ``torch.cuda.get_device_name()`` (first match wins)
BF16_PEAK_TFLOPS = [
    ("H200", 989.0),
    ("GH200", 989.0),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10", 125.0),
]


def bf16_peak(name: str) -> float | None:
    """The bf16 dense peak of a card by name, or None when not in the table."""
    for key, peak in BF16_PEAK_TFLOPS:
        if key.lower() in name.lower():
            return peak
    return None


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def saved_and_loaded(name: str, workdir: Path, device):
    """Random weights of ``name`` -> safetensors -> ``create_encoder(weights=FILE)``."""
    import torch
    from safetensors.torch import save_file

    from napari_seal.models.factory import build_module, create_encoder

    path = workdir / f"{name}-random.safetensors"
    t0 = time.perf_counter()
    if not path.is_file():
        torch.manual_seed(0)
        with torch.device(device):
            module = build_module(name)
        state = {
            k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()
        }
        del module
        save_file(state, str(path))
        del state
    t_saved = time.perf_counter()
    encoder = create_encoder(name, weights=path, device=device)
    t_loaded = time.perf_counter()
    return encoder, {
        "weights_file": str(path),
        "weights_gb": path.stat().st_size / 1e9,
        "save_s": t_saved - t0,
        "load_s": t_loaded - t_saved,
        "params_m": sum(p.numel() for p in encoder.module.parameters()) / 1e6,
    }


def flops_per_tile(encoder, device) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, encoder.tile_px, encoder.tile_px, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        encoder.module(x)
    return float(counter.get_total_flops())


def model_only(encoder, session, *, batch_size: int, iters: int, device) -> dict:
    """(a) module on a ready GPU batch, (b) the session from uint8 host tiles."""
    import torch

    from napari_seal.models.inference import _autocast

    t = encoder.tile_px
    x = torch.randn(batch_size, 3, t, t, device=device)
    x = x.contiguous(memory_format=session._fmt)
    module = session.module
    with torch.inference_mode(), _autocast(session.plan.precision, device):
        module(x)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            module(x)
        sync(device)
    pure = iters * batch_size / (time.perf_counter() - t0)
    tiles = np.random.default_rng(0).integers(
        0, 256, (batch_size * iters, t, t, 3), dtype=np.uint8
    )
    session(tiles[:batch_size])
    t0 = time.perf_counter()
    session(tiles)
    sync(device)
    from_host = len(tiles) / (time.perf_counter() - t0)
    return {"module_tiles_per_s": pure, "session_tiles_per_s": from_host}


def generated_slide(workdir: Path, side_px: int):
    """A generated side x side pyramidal JPEG TIFF at 0.5 um/px (cached)."""
    from napari_seal.io.slide.core import open_slide
    from napari_seal.io.slide.writer import write_pyramidal_tiff
    from napari_seal.testing import synthetic_large_slide

    path = workdir / f"synthetic-{side_px}-0.5um.tif"
    t0 = time.perf_counter()
    if not path.is_file():
        src = synthetic_large_slide(side_px, side_px, mpp=0.5)
        write_pyramidal_tiff(path, src, mpp=0.5, tile_px=512)
    return open_slide(path), time.perf_counter() - t0


def end_to_end(slide, encoder, args, workdir: Path) -> dict:
    from napari_seal.embedding.run import iter_embed

    store = Path(tempfile.mkdtemp(dir=workdir)) / "gpu.zarr"
    t_first = done0 = None
    t_start = time.perf_counter()
    for ev in iter_embed(
        slide,
        encoder,
        store,
        batch_size=args.batch_size,
        max_tiles=args.max_tiles,
        precision=args.precision,
        read_workers=args.read_workers,
        prefetch_batches=max(3, args.read_workers),
    ):
        if ev.done and t_first is None:  # the first batch is out: steady state
            t_first, done0 = time.perf_counter(), ev.done
        n = ev.total
    t_end = time.perf_counter()
    return {
        "tiles": n,
        "steady_tiles_per_s": (n - done0) / (t_end - t_first),
        "total_s": t_end - t_start,
        "setup_s": t_first - t_start,
    }


def training_step(encoder, args, device) -> dict:
    """One (plus one warm-up) SEAL step of the preset on synthetic tiles."""
    import torch

    import napari_seal.training.runs as runs
    from napari_seal.models.lora import apply_lora, default_lora_spec
    from napari_seal.training.config import config_from_preset
    from napari_seal.training.losses import clip_loss, recon_loss
    from napari_seal.training.model import SealModel, autocast_dtype

    config = config_from_preset(
        args.preset, encoder=encoder.name, batch_size=args.train_batch
    )
    bs, g = config.batch_size, config.n_genes
    result = {"preset": args.preset, "batch_size": bs, "n_genes": g}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        spec = default_lora_spec(encoder)
        core = SealModel(
            apply_lora(encoder.module, spec),
            *runs.build_heads(config, encoder.embed_dim, g),
        ).to(device)
        core.set_train_mode()
        params = [p for p in core.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        gen = torch.Generator(device="cpu").manual_seed(0)
        t = encoder.tile_px
        x = torch.randn(bs, 3, t, t, generator=gen).to(device)
        expr = torch.log1p(torch.rand(bs, g, generator=gen) * 20).to(device)
        mean, std = expr.mean(0), expr.std(0) + 1e-3
        ac = autocast_dtype(config.precision, device)
        times = []
        for _ in range(2):  # warm-up + measured
            sync(device)
            t0 = time.perf_counter()
            with torch.autocast(
                device.type, dtype=ac or torch.float32, enabled=ac is not None
            ):
                z_img, vout, pred = core(x, expr)
            clip, _ = clip_loss(z_img, vout.z, tau=config.tau, gather=False)
            kw = {"mean": mean, "std": std}
            loss = (
                clip
                + recon_loss(vout.recon, expr, **kw)[0]
                + recon_loss(pred, expr, **kw)[0]
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync(device)
            times.append(time.perf_counter() - t0)
        result.update(
            fits=True,
            step_s=times[-1],
            first_step_s=times[0],
            loss=float(loss.detach()),
            trainable_m=sum(p.numel() for p in params) / 1e6,
            lora_last_n_blocks=spec.last_n_blocks,
            precision="bf16" if ac is torch.bfloat16 else "fp32",
        )
    except torch.cuda.OutOfMemoryError as err:
        result.update(fits=False, error=str(err).splitlines()[0])
    if device.type == "cuda":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        result["gpu_total_gb"] = (
            torch.cuda.get_device_properties(device).total_memory / 1e9
        )
    return result


def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, test-vit, tiny sizes")
    ap.add_argument("--encoder", default="uni2-h")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--slide-px", type=int, default=16384)
    ap.add_argument("--max-tiles", type=int, default=4096)
    ap.add_argument("--read-workers", type=int, default=min(8, os.cpu_count() or 2))
    ap.add_argument("--preset", default="80GB")
    ap.add_argument(
        "--train-batch", type=int, default=None, help="default: the preset's"
    )
    ap.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "napari-seal-gpu"
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.smoke:
        args.encoder, args.batch_size, args.iters = "test-vit", 8, 2
        args.slide_px, args.max_tiles, args.read_workers = 2048, 32, 2
        args.precision, args.train_batch = "auto", 8
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NAPARI_SEAL_CACHE", str(args.workdir / "cache"))
    import torch

    from napari_seal.models.inference import InferenceSession

    if args.smoke:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        sys.stderr.write("no CUDA device: run on a GPU machine, or use --smoke\n")
        return 2
    card = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke)"
    )
    peak = bf16_peak(card) if device.type == "cuda" else None
    report: dict = {
        "device": card,
        "encoder": args.encoder,
        "batch_size": args.batch_size,
    }
    print(f"device: {card}; bf16 dense peak: {peak or 'unknown'} TFLOP/s")

    encoder, load = saved_and_loaded(args.encoder, args.workdir, device)
    report["weights"] = load
    print(
        f"{args.encoder}: {load['params_m']:.0f} M params, random weights "
        f"{load['weights_gb']:.2f} GB saved in {load['save_s']:.1f} s, loaded through "
        f"create_encoder(weights=FILE) in {load['load_s']:.1f} s"
    )
    session = InferenceSession(
        encoder, batch_size=args.batch_size, device=device, precision=args.precision
    )
    fpt = flops_per_tile(encoder, device)
    model = model_only(
        encoder, session, batch_size=args.batch_size, iters=args.iters, device=device
    )
    tflops = fpt * model["module_tiles_per_s"] / 1e12
    model.update(
        gflop_per_tile=fpt / 1e9, achieved_tflops=tflops, plan=session.plan.to_dict()
    )
    if peak:
        model["fraction_of_bf16_peak"] = tflops / peak
    report["model_only"] = model
    print(
        f"\nmodel-only ({session.plan.precision}, batch {args.batch_size}): module "
        f"{model['module_tiles_per_s']:.0f} tiles/s = {tflops:.1f} TFLOP/s "
        f"({fpt / 1e9:.1f} GFLOP/tile)"
        + (
            f" = {tflops / peak:.0%} of the bf16 dense peak (goal >= 50%)"
            if peak
            else ""
        )
        + "\n  from uint8 host tiles (session): "
        f"{model['session_tiles_per_s']:.0f} tiles/s"
        f" (RATIO {model['session_tiles_per_s'] / model['module_tiles_per_s']:.2f})"
    )
    slide, write_s = generated_slide(args.workdir, args.slide_px)
    e2e = end_to_end(slide, encoder, args, args.workdir)
    e2e["slide_write_s"] = write_s
    e2e["ratio_vs_module"] = e2e["steady_tiles_per_s"] / model["module_tiles_per_s"]
    e2e["ratio_vs_session"] = e2e["steady_tiles_per_s"] / model["session_tiles_per_s"]
    report["end_to_end"] = e2e
    print(
        f"\nembed end-to-end ({args.slide_px} px generated slide, "
        f"{e2e['tiles']} tiles, "
        f"{args.read_workers} readers): {e2e['steady_tiles_per_s']:.0f} tiles/s steady "
        f"(set-up {e2e['setup_s']:.1f} s)\n  RATIO end-to-end / model-only = "
        f"{e2e['ratio_vs_module']:.2f} (goal >= 0.9; vs the session "
        f"{e2e['ratio_vs_session']:.2f})"
    )
    train = training_step(encoder, args, device)
    report["training"] = train
    mem = (
        f", peak {train['peak_gpu_gb']:.1f} of {train['gpu_total_gb']:.0f} GB"
        if "peak_gpu_gb" in train
        else ""
    )
    status = (
        f"step {train['step_s']:.2f} s (first {train['first_step_s']:.1f} s), "
        f"{train['batch_size'] / train['step_s']:.0f} spots/s"
        if train["fits"]
        else f"does NOT fit: {train['error']}"
    )
    print(
        f"\nSEAL training step, preset {train['preset']} (batch {train['batch_size']}, "
        f"{train['n_genes']} genes): {status}{mem}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
