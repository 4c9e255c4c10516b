"""Run-directory helpers: output checks, checkpoint rotation, incomplete runs."""

from __future__ import annotations

import json

import pytest
import torch

import napari_seal.training.runs as runs
from napari_seal.errors import CheckpointError, OutputPathError


def _ckpt(out, step, tag):
    return runs.write_checkpoint(
        out,
        tag=tag,
        tensors={"omics.w": torch.full((2,), float(step))},
        optim={
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}
        },
        rng={"torch": torch.get_rng_state()},
        state={"global_step": step, "epoch": step, "step_in_epoch": 0},
    )


def test_checkpoints_rotate_and_latest_is_highest_step(tmp_path):
    for step in (3, 6, 9):
        _ckpt(tmp_path, step, f"epoch-{step:03d}")
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["epoch-006", "epoch-009"]  # the newest two are kept
    latest = runs.latest_checkpoint(tmp_path)
    assert latest.name == "epoch-009"
    tensors, optim, rng, state = runs.read_checkpoint(latest)
    assert torch.equal(tensors["omics.w"], torch.full((2,), 9.0))
    assert optim["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert state["global_step"] == 9
    assert isinstance(rng["torch"], torch.Tensor)


def test_half_written_checkpoints_are_ignored_and_damaged_ones_reported(tmp_path):
    _ckpt(tmp_path, 2, "epoch-002")
    partial = tmp_path / "checkpoints" / ".tmp-epoch-003-999"
    partial.mkdir()
    (partial / "state.json").write_text(json.dumps({"global_step": 3}))
    assert runs.latest_checkpoint(tmp_path).name == "epoch-002"
    (tmp_path / "checkpoints" / "epoch-002" / "trainable.safetensors").write_bytes(
        b"junk"
    )
    with pytest.raises(CheckpointError, match="unreadable"):
        runs.read_checkpoint(tmp_path / "checkpoints" / "epoch-002")


def test_check_output_dir(tmp_path):
    assert runs.check_output_dir(tmp_path / "new" / "run", resume=False) == (
        tmp_path / "new" / "run"
    )
    assert not (tmp_path / "new").exists()  # nothing is created
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(OutputPathError, match="not empty"):
        runs.check_output_dir(tmp_path / "used", resume=False)
    assert runs.check_output_dir(tmp_path / "used", resume=True)


def test_load_run_rejects_non_runs_and_incomplete_runs(tmp_path):
    with pytest.raises(CheckpointError, match="not a SEAL run directory"):
        runs.load_run(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="incomplete.*--resume"):
        runs.load_run(tmp_path)
    (tmp_path / "DONE").write_text("{}")
    with pytest.raises(CheckpointError, match="lacks panel.json"):
        runs.load_run(tmp_path)


def test_export_run_stores_fp16_heads_and_loads_like_the_full_run(tiny_run, tmp_path):
    import numpy as np
    from safetensors.torch import load_file

    out = runs.export_run(tiny_run, tmp_path / "shipped")
    heads = load_file(str(out / runs.HEADS))
    floats = [v for v in heads.values() if v.is_floating_point()]
    assert floats
    assert all(v.dtype == torch.float16 for v in floats)
    assert not (out / runs.CHECKPOINTS).exists()
    assert json.loads((out / "run.json").read_text())["storage"]["heads_dtype"] == (
        "float16"
    )
    full, small = runs.load_run(tiny_run), runs.load_run(out)
    # upcast on load: the modules compute in fp32
    assert all(p.dtype == torch.float32 for p in small.decoder.parameters())
    assert all(p.dtype == torch.float32 for p in small.omics.parameters())
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(16, full.encoder.embed_dim)).astype(np.float32)
    pa, pb = full.predict_expression(emb), small.predict_expression(emb)
    assert np.abs(pa - pb).max() <= 2e-3 * max(1.0, float(np.abs(pa).max()))
    expr = np.abs(rng.normal(size=(8, len(full.panel)))).astype(np.float32)
    qa, qb = full.encode_query(expr), small.encode_query(expr)
    cos = (qa * qb).sum(1) / np.linalg.norm(qa, axis=1) / np.linalg.norm(qb, axis=1)
    assert cos.min() > 0.999
    # the adapters are copied as they are: the merged encoders are identical
    for (ka, va), (kb, vb) in zip(
        full.encoder.module.state_dict().items(),
        small.encoder.module.state_dict().items(),
        strict=True,
    ):
        assert ka == kb
        assert torch.equal(va, vb)
    hsize = (tiny_run / runs.HEADS).stat().st_size
    assert (out / runs.HEADS).stat().st_size < 0.6 * hsize


def test_export_run_refuses_unfinished_runs_and_used_folders(tiny_run, tmp_path):
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / runs.CONFIG).write_text("{}")
    with pytest.raises(CheckpointError, match="incomplete"):
        runs.export_run(tmp_path / "unfinished", tmp_path / "a")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(OutputPathError, match="not empty"):
        runs.export_run(tiny_run, tmp_path / "used")
