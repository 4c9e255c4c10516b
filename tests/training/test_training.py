"""The SEAL trainer: events, run folder, cancel/checkpoint/resume, load_run, bad
input."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

from napari_seal.errors import CheckpointError, OutputPathError, TrainingConfigError
from napari_seal.io.sample import SpatialSample
from napari_seal.io.slide.core import Slide
from napari_seal.training.config import TrainConfig
from napari_seal.training.events import (
    CheckpointEvent,
    EpochEvent,
    EvalEvent,
    StepEvent,
)
from napari_seal.training.model import lr_at
from napari_seal.training.trainer import iter_train, train


def synth_sample(
    name: str, *, n_side: int = 10, seed: int = 0, pitch_px: int = 48, mpp: float = 1.0
) -> SpatialSample:
    """Colour blocks on a grid; genes G0-G29 follow the colour under each spot."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 1, (n_side + 3, n_side + 3, 3))
    img = np.kron(low, np.ones((pitch_px, pitch_px, 1)))
    img = (img * 200 + 30 + rng.normal(0, 10, img.shape)).clip(0, 255).astype(np.uint8)
    ys, xs = np.mgrid[0:n_side, 0:n_side]
    xy = np.stack([(xs.ravel() + 1.5) * pitch_px, (ys.ravel() + 1.5) * pitch_px], 1)
    colour = np.array([low[int(y // pitch_px), int(x // pitch_px)] for x, y in xy])
    rates = np.full((len(xy), 80), 2.0)
    rates[:, :30] += 40 * np.repeat(colour, 10, axis=1)
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(rates).astype(np.float32)))
    adata.obs_names = [f"{name}_{i}" for i in range(len(xy))]
    genes = [f"G{i}" for i in range(80)]
    genes[40:43] = ["ERBB2", "KRT19", "PTPRC"]
    adata.var_names = genes
    adata.obsm["spatial"] = xy.astype(np.float64)
    return SpatialSample(
        slide=Slide.from_array(img, mpp=mpp, name=name),
        adata=adata,
        mpp=mpp,
        spot_diameter_um=30.0,
        name=name,
        inter_spot_dist_um=pitch_px * mpp,
    )


def small_config(**kw) -> TrainConfig:
    base = {
        "encoder": "test-vit",
        "epochs": 2,
        "batch_size": 16,
        "n_genes": 24,
        "vae_hidden": (64, 32),
        "decoder_hidden": 32,
        "precision": "fp32",
        "augment": "hard",
        "augment_views": 0,
        "lr": 1e-3,
    }
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids spin-waits."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def sample() -> SpatialSample:
    return synth_sample("synA", n_side=8, seed=0)


def test_lr_schedule_warmup_then_cosine():
    lrs = [lr_at(s, base_lr=1.0, total_steps=10, warmup_steps=2) for s in range(10)]
    assert lrs[:2] == [0.5, 1.0]
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False))
    assert lrs[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 7 / 8)))


def test_events_run_directory_and_load_run(sample, tmp_path):
    out = tmp_path / "run"
    cfg = small_config(precision="bf16", eval_fraction=0.25, include_genes=("G50",))
    events = list_events(iter_train([sample], out=out, config=cfg, device="cpu"))
    steps = [e for e in events if isinstance(e, StepEvent)]
    # 48 training spots // 16 = 3 steps per epoch, 2 epochs
    assert [e.step for e in steps] == list(range(1, 7))
    assert all(e.total == 6 and np.isfinite(e.loss) for e in steps)
    first = steps[0]
    expected = first.clip + first.recon_vae + first.recon_img
    assert first.loss == pytest.approx(expected, rel=1e-4)
    assert steps[0].lr == pytest.approx(1e-3)
    assert steps[-1].lr < steps[3].lr
    assert sum(isinstance(e, EpochEvent) for e in events) == 2
    evals = [e for e in events if isinstance(e, EvalEvent)]
    assert len(evals) == 2
    assert evals[0].metrics["n_spots"] == 16
    ckpts = [e for e in events if isinstance(e, CheckpointEvent)]
    assert [c.reason for c in ckpts] == ["epoch", "epoch", "done"]
    for name in (
        "config.json",
        "run.json",
        "panel.json",
        "metrics.jsonl",
        "DONE",
        "adapter.safetensors",
        "lora_spec.json",
        "heads.safetensors",
    ):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "epoch-001",
        "epoch-002",
    ]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["type"] == "StepEvent"] == list(range(1, 7))
    info = json.loads((out / "run.json").read_text())
    from napari_seal.training.model import cpu_has_native_bf16

    assert info["precision"] == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert info["n_train_spots"] == 48

    from napari_seal.training.runs import load_run

    run = load_run(out)
    assert "G50" in run.panel.genes
    assert "ERBB2" in run.panel.genes
    assert {"ERBB2", "KRT19", "PTPRC"} <= set(run.panel.genes)
    assert set(run.panel.sources) == {"hvg", "marker", "include"}
    assert run.panel.sources[run.panel.genes.index("G50")] == "include"
    assert TrainConfig.from_dict(run.config.to_dict()) == cfg
    unmerged = load_run(out, merge=False)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        merged_out = run.encoder.module(x)
        lora_out = unmerged.encoder.module(x)
    assert type(run.encoder.module).__name__ == "VisionTransformer"  # plain timm
    assert torch.allclose(merged_out, lora_out, atol=1e-5)
    assert merged_out.shape == (3, run.encoder.embed_dim)
    from napari_seal.models.factory import create_encoder

    torch.manual_seed(cfg.seed)
    base = create_encoder("test-vit")
    with torch.no_grad():
        assert not torch.allclose(base.module(x), merged_out, atol=1e-4)  # trained
    q = run.encode_query(run.panel.expression(sample)[:4])
    assert q.shape == (4, 64)
    assert np.array_equal(q, run.encode_query(run.panel.expression(sample)[:4]))
    pred = run.predict_expression(merged_out.numpy())
    assert pred.shape == (3, len(run.panel))
    assert pred.min() >= 0


def list_events(gen):
    return list(gen)


def _final_tensors(out):
    t = load_file(str(out / "heads.safetensors"))
    t.update(
        {f"lora.{k}": v for k, v in load_file(str(out / "adapter.safetensors")).items()}
    )
    return t


@pytest.mark.parametrize("views", [0, 2])
def test_cancel_checkpoints_and_resume_matches_straight_run(sample, tmp_path, views):
    cfg = small_config(epochs=2, augment_views=views)
    straight = train([sample], out=tmp_path / "a", config=cfg, device="cpu")

    out = tmp_path / "b"
    gen = iter_train([sample], out=out, config=cfg, device="cpu")
    for event in gen:
        if isinstance(event, StepEvent) and event.step == 6:  # mid epoch 2
            break
    gen.close()
    assert (out / "checkpoints" / "epoch-001-step-0000006").is_dir()
    assert not (out / "DONE").exists()
    from napari_seal.training.runs import load_run

    with pytest.raises(CheckpointError, match="incomplete"):
        load_run(out)
    resumed = list(
        iter_train([sample], out=out, config=None, resume=True, device="cpu")
    )
    steps = [e.step for e in resumed if isinstance(e, StepEvent)]
    assert steps == [7, 8]
    a, b = _final_tensors(straight), _final_tensors(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    la = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    loss_a = [x["loss"] for x in la if x["type"] == "StepEvent"]
    loss_b = [x["loss"] for x in lb if x["type"] == "StepEvent"]
    assert loss_b == pytest.approx(loss_a, rel=1e-6)  # one line per step, no duplicates


def test_shuffle_pairs_control_breaks_pairing_within_samples(tmp_path):
    from napari_seal.training._loop import _prepare

    samples = [
        synth_sample("s1", n_side=6, seed=1),
        synth_sample("s2", n_side=6, seed=2),
    ]

    def prepared(shuffle):
        gen = _prepare(
            samples, tmp_path, small_config(shuffle_pairs=shuffle), resume=False
        )
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            return stop.value[2]

    plain, shuffled = prepared(False), prepared(True)
    assert np.array_equal(plain.images, shuffled.images)
    moved = ~np.all(plain.expr == shuffled.expr, axis=1)
    assert moved.mean() > 0.8
    for s in range(2):  # each sample keeps its own expression rows, re-assigned
        rows = plain.sample_index == s
        a = np.sort(plain.expr[rows], axis=0)
        b = np.sort(shuffled.expr[rows], axis=0)
        assert np.array_equal(a, b)


def test_too_few_spots_for_batch_is_a_config_error_and_writes_nothing(tmp_path):
    small = synth_sample("tiny", n_side=3)
    out = tmp_path / "run"
    with pytest.raises(
        TrainingConfigError, match=r"only 9 training spots.*batch of 16"
    ):
        train([small], out=out, config=small_config(), device="cpu")
    assert not out.exists()


def test_unusable_output_directories(sample, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(OutputPathError, match="not writable"):
        train([sample], out=a_file / "run", config=small_config(), device="cpu")
    with pytest.raises(OutputPathError, match="is a file"):
        train([sample], out=a_file, config=small_config(), device="cpu")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    with pytest.raises(OutputPathError, match="--resume"):
        train([sample], out=busy, config=small_config(), device="cpu")


def test_resume_refuses_changed_settings(sample, tmp_path):
    out = tmp_path / "run"
    train([sample], out=out, config=small_config(epochs=1, max_steps=1), device="cpu")
    with pytest.raises(TrainingConfigError, match="lr="):
        train(
            [sample],
            out=out,
            config=small_config(epochs=1, lr=0.5),
            resume=True,
            device="cpu",
        )
    # more epochs is allowed: continues from the last checkpoint
    events = list(
        iter_train(
            [sample],
            out=out,
            config=small_config(epochs=1, max_steps=2),
            resume=True,
            device="cpu",
        )
    )
    assert [e.step for e in events if isinstance(e, StepEvent)] == [2]
    assert (out / "DONE").is_file()


def test_stop_file_checkpoints_and_stops(sample, tmp_path):
    out = tmp_path / "run"
    gen = iter_train([sample], out=out, config=small_config(), device="cpu")
    events = []
    for event in gen:
        events.append(event)
        if isinstance(event, StepEvent) and event.step == 2:
            (out / "STOP").write_text("")
    assert isinstance(events[-1], CheckpointEvent)
    assert events[-1].reason == "stop"
    assert events[-2].step == 2
    assert not (out / "DONE").exists()
    assert not (out / "STOP").exists()


def test_prefix_split_equals_full_forward_on_test_vit():
    from napari_seal.models.factory import create_encoder
    from napari_seal.models.lora import apply_lora, default_lora_spec
    from napari_seal.training._prefix import find_split

    enc = create_encoder("test-vit")
    spec = default_lora_spec(enc)
    model = apply_lora(enc.module, spec)
    with torch.no_grad():  # make the adapters non-trivial
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    x = torch.rand(5, 3, 64, 64)
    split = find_split(model, block_regex=spec.block_regex, check=x)
    assert split is not None
    assert split.name == "base_model.model.blocks.3"  # last 3 of 6 blocks adapted
    model.eval()
    with torch.no_grad():
        full = model(x)
        feats = split.prefix(x)
        assert feats.shape == (5, 17, 64)  # tokens entering block 3
        part = split.suffix(feats, torch.zeros(1, 3, 64, 64))
    assert torch.allclose(part, full, atol=1e-5)


def test_batchnorm_folding_keeps_the_default_encoder_output():
    from napari_seal.models.factory import create_encoder
    from napari_seal.models.lora import apply_lora, default_lora_spec
    from napari_seal.training._fold import fold_frozen_batchnorm

    enc = create_encoder("default")
    model = apply_lora(enc.module, default_lora_spec(enc)).eval()
    x = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        ref = model(x)
        n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        folded = fold_frozen_batchnorm(model, x[:1])
        out = model(x)
    # every BatchNorm after a frozen conv is folded; the LoRA'd ones stay
    assert 30 < folded < n_bn
    assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4)
    assert all(not p.requires_grad
               for n, p in model.named_parameters() if "lora" not in n)


def test_view_cache_runs_the_prefix_in_the_steps_precision():
    """bf16 autocast for the frozen prefix (as the steps run): close to fp32 and
    actually applied (the cached activations differ from the fp32 ones)."""
    from napari_seal.models.factory import create_encoder
    from napari_seal.models.lora import apply_lora, default_lora_spec
    from napari_seal.training._prefix import find_split, precompute_views

    enc = create_encoder("test-vit")
    model = apply_lora(enc.module, default_lora_spec(enc)).eval()
    images = np.random.default_rng(0).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    split = find_split(model, block_regex=default_lora_spec(enc).block_regex, check=x)
    norm = (torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25))
    kw = {"n_views": 2, "mode": "hard", "seed": 3, "norm": norm}
    cpu = torch.device("cpu")
    fp32 = list(precompute_views(split, images, device=cpu, **kw))[-1][1]
    bf16 = list(
        precompute_views(split, images, device=cpu, autocast=torch.bfloat16, **kw)
    )[-1][1]
    assert fp32.dtype == bf16.dtype == torch.float32
    assert fp32.shape == bf16.shape == (2, 6, 17, 64)
    cos = torch.nn.functional.cosine_similarity(
        fp32.flatten(1), bf16.flatten(1), dim=1
    )
    assert float(cos.min()) > 0.999
    assert not torch.equal(fp32, bf16)
