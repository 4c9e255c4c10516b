"""Crash and resume (issue 7): SIGKILL / SIGINT on real subprocesses, then resume.

Each training or embedding run is a real ``python -m napari_seal``-style process.
Kill points are either random (an outside ``SIGKILL`` once the run has got to a
randomly drawn step or chunk) or injected exactly by a small runner script that
wraps one internal call and ``SIGKILL``s its own process there (inside a checkpoint
write, right after one, before ``DONE``, between a chunk's embeddings and its
``done`` flag). After every kill the run folder / store must be consistent (every
finished checkpoint or chunk loads and is intact; no partial file is taken for a
finished one), and the resumed run must end exactly where an uninterrupted run with
the same seed ends.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import load_file

import napari_seal.training.runs as runs
from napari_seal.errors import CheckpointError

# Wraps one internal call and SIGKILLs this very process there (SEAL_KILL=kind:n).
RUNNER = r"""
import os, signal, sys

def die():
    os.kill(os.getpid(), signal.SIGKILL)

kind, _, arg = os.environ.get("SEAL_KILL", "").partition(":")
n = int(arg or 0)
count = [0]
if kind == "ckpt-write":  # inside the n-th checkpoint write, before its rename
    import torch
    orig_save = torch.save
    def save(obj, f, *a, **k):
        orig_save(obj, f, *a, **k)
        if str(f).endswith("optim.pt") and "/.tmp-" in str(f):
            count[0] += 1
            if count[0] == n:
                die()
    torch.save = save
elif kind == "after-ckpt":  # right after the n-th checkpoint is in place
    import napari_seal.training.runs as runs
    orig_wc = runs.write_checkpoint
    def write_checkpoint(*a, **k):
        path = orig_wc(*a, **k)
        count[0] += 1
        if count[0] == n:
            die()
        return path
    runs.write_checkpoint = write_checkpoint
elif kind == "before-done":  # final adapters and heads written, DONE not yet
    import napari_seal.training.runs as runs
    orig_wj = runs.write_json
    def write_json(path, obj):
        if path.name == runs.DONE:
            die()
        orig_wj(path, obj)
    runs.write_json = write_json
elif kind == "chunk-write":  # n-th chunk: embeddings written, done flag not yet
    from napari_seal.embedding.store import StoreWriter
    orig_chunk = StoreWriter.write_chunk
    def write_chunk(self, chunk, emb):
        count[0] += 1
        if count[0] == n:
            c0, c1 = self.chunk_range(chunk)
            self.embeddings[c0:c1] = emb.astype(self.embeddings.dtype)
            die()
        orig_chunk(self, chunk, emb)
    StoreWriter.write_chunk = write_chunk

from napari_seal.cli import main
sys.exit(main(sys.argv[1:]))
"""

CKPT_FILES = {"trainable.safetensors", "optim.pt", "rng.pt", "state.json"}
STEPS_PER_EPOCH = 5  # 187 training spots of the bundled section // batch 32
EPOCHS = 3
TOTAL_STEPS = STEPS_PER_EPOCH * EPOCHS


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runner") / "seal_runner.py"
    path.write_text(RUNNER)
    return path


def _env(kill: str = "") -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # same threads in every process: same arithmetic
    env["SEAL_KILL"] = kill
    env.pop("PYTEST_XDIST_WORKER", None)
    return env


def _start(runner: Path, args: list[str], *, kill: str = "") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(runner), *args],
        env=_env(kill),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def _run(runner: Path, args: list[str], *, kill: str = "") -> tuple[int, str, str]:
    return _finish(_start(runner, args, kill=kill))


def _kill_when(proc: subprocess.Popen, ready, *, sig=signal.SIGKILL, timeout=300):
    """Send ``sig`` once ``ready()`` is true (polled every 5 ms); return the rc."""
    t0 = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - t0 < timeout:
            if ready():
                proc.send_signal(sig)
                break
            time.sleep(0.005)
        rc, _, err = _finish(proc, timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return rc, err


# --------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def bundled() -> str:
    from napari_seal.io.hest import bundled_sample_path

    return str(bundled_sample_path())


def _train_args(bundled: str, out: Path, *, resume: bool = False) -> list[str]:
    args = [
        "train",
        bundled,
        "--out",
        str(out),
        "--encoder",
        "test-vit",
        "--preset",
        "cpu-smoke",
        "--batch-size",
        "32",
        "--epochs",
        str(EPOCHS),
        "--max-steps",
        "1000",
        "--seed",
        "7",
        "--device",
        "cpu",
    ]
    return [*args, "--resume"] if resume else args


@pytest.fixture(scope="module")
def straight_run(runner, bundled, tmp_path_factory) -> Path:
    """The uninterrupted reference run (same seed, same process setup)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    rc, _, err = _run(runner, _train_args(bundled, out))
    assert rc == 0, err
    return out


def _metric_lines(out: Path) -> list[dict]:
    path = out / runs.METRICS
    if not path.is_file():
        return []
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by the kill
            continue
    return lines


def _steps_logged(out: Path) -> int:
    steps = [x["step"] for x in _metric_lines(out) if x.get("type") == "StepEvent"]
    return max(steps, default=0)


def check_run_dir(out: Path) -> Path | None:
    """Assert the invariants of a killed run folder; return the resume checkpoint."""
    root = out / runs.CHECKPOINTS
    finished = (
        [d for d in root.iterdir() if not d.name.startswith(".")]
        if root.is_dir()
        else []
    )
    for d in finished:
        assert {p.name for p in d.iterdir()} == CKPT_FILES, d  # none half-filled
        tensors, optim, rng, state = runs.read_checkpoint(d)  # every one loads
        assert all(torch.isfinite(t).all() for t in tensors.values())
        assert "optimizer" in optim
        assert "torch" in rng
        assert f"{state['global_step']:07d}" in d.name or state["step_in_epoch"] == 0
    latest = runs.latest_checkpoint(out)
    if finished:
        assert latest in finished  # a temporary folder is never the latest
    else:
        assert latest is None
    if not (out / runs.DONE).exists():
        with pytest.raises(CheckpointError, match="incomplete"):
            runs.load_run(out)
    for p in out.rglob("*"):  # leftovers of atomic writes never carry a final name
        if p.name.startswith("."):
            assert p.name not in (runs.DONE, runs.CONFIG, runs.HEADS)
    return latest


def _final_tensors(out: Path) -> dict[str, torch.Tensor]:
    t = {f"heads.{k}": v for k, v in load_file(str(out / runs.HEADS)).items()}
    t.update(
        {f"lora.{k}": v for k, v in load_file(str(out / "adapter.safetensors")).items()}
    )
    return t


def assert_same_run(a: Path, b: Path) -> None:
    """Same final weights (bitwise) and the same metrics, one line per step."""
    ta, tb = _final_tensors(a), _final_tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    la, lb = _metric_lines(a), _metric_lines(b)
    for kind in ("StepEvent", "EpochEvent"):
        xa = [(x["step"], x["loss"]) for x in la if x["type"] == kind]
        xb = [(x["step"], x["loss"]) for x in lb if x["type"] == kind]
        assert xa == xb, kind
    steps = [x["step"] for x in lb if x["type"] == "StepEvent"]
    assert steps == list(range(1, TOTAL_STEPS + 1))
    assert json.loads((b / runs.DONE).read_text())["global_step"] == TOTAL_STEPS


def test_train_kill9_chain_resumes_to_the_uninterrupted_result(
    runner, bundled, straight_run, tmp_path
):
    """Four kills in one run (3 injected + 1 random), resumed after each."""
    out = tmp_path / "run"
    rng = random.Random(20261129)
    kills = 0
    # 1. inside the first checkpoint write (tmp folder half written, not renamed)
    rc, _, err = _run(runner, _train_args(bundled, out), kill="ckpt-write:1")
    assert rc == -signal.SIGKILL, err
    kills += 1
    tmp_dirs = [p for p in (out / runs.CHECKPOINTS).iterdir() if p.name[0] == "."]
    assert tmp_dirs, "the kill did not land inside the checkpoint write"
    assert check_run_dir(out) is None  # the half-written one is not a checkpoint
    # 2. right after the first checkpoint of the resumed run is in place
    rc, _, err = _run(
        runner, _train_args(bundled, out, resume=True), kill="after-ckpt:1"
    )
    assert rc == -signal.SIGKILL, err
    kills += 1
    assert not any(p.exists() for p in tmp_dirs)  # the resume removed kill 1's leftover
    ck = check_run_dir(out)
    assert ck is not None
    assert ck.name == "epoch-001"
    # 3. random: an outside SIGKILL once a random step of epoch 2 or 3 is logged
    target = rng.randint(STEPS_PER_EPOCH + 1, TOTAL_STEPS - 2)
    proc = _start(runner, _train_args(bundled, out, resume=True))
    rc, err = _kill_when(proc, lambda: _steps_logged(out) >= target)
    assert rc == -signal.SIGKILL, err
    kills += 1
    ck = check_run_dir(out)
    assert ck is not None
    # 4. with everything written except DONE
    rc, _, err = _run(
        runner, _train_args(bundled, out, resume=True), kill="before-done"
    )
    assert rc == -signal.SIGKILL, err
    kills += 1
    assert not (out / runs.DONE).exists()
    ck = check_run_dir(out)
    assert json.loads((ck / "state.json").read_text())["global_step"] == TOTAL_STEPS
    # resume to the end
    rc, stdout, err = _run(runner, _train_args(bundled, out, resume=True))
    assert rc == 0, err
    assert stdout.strip() == str(out)
    assert kills == 4
    assert_same_run(straight_run, out)
    runs.load_run(out)  # and it is a usable run


@pytest.mark.slow
def test_train_ctrl_c_exits_130_with_one_line_and_resumes(
    runner, bundled, straight_run, tmp_path
):
    out = tmp_path / "run"
    proc = _start(runner, _train_args(bundled, out))
    rc, err = _kill_when(proc, lambda: _steps_logged(out) >= 2, sig=signal.SIGINT)
    assert rc == 130, err
    assert "Traceback" not in err
    msgs = [x for x in err.replace("\r", "\n").splitlines() if "napari-seal:" in x]
    assert msgs[-1].startswith("napari-seal: stopped; resume with"), msgs
    assert len(msgs) <= 2  # "stopping after this step" + "stopped; resume with"
    ck = check_run_dir(out)
    assert ck is not None  # the stop wrote a checkpoint of the last finished step
    state = json.loads((ck / "state.json").read_text())
    assert state["reason"] in ("stop", "cancel", "epoch")
    rc, _, err = _run(runner, _train_args(bundled, out, resume=True))
    assert rc == 0, err
    assert_same_run(straight_run, out)


# -------------------------------------------------------------------- embedding


@pytest.fixture(scope="module")
def embed_inputs(tmp_path_factory):
    """A synthetic pyramidal TIFF (~300 tissue tiles for test-vit) and fixed weights."""
    from safetensors.torch import save_file

    from napari_seal.models.factory import create_encoder
    from napari_seal.testing import write_synthetic_slide

    d = tmp_path_factory.mktemp("embed-in")
    tiff = write_synthetic_slide(d / "s.tif", width_px=6000, height_px=5000, mpp=0.5)
    torch.manual_seed(0)
    enc = create_encoder("test-vit")
    weights = d / "test-vit.safetensors"
    save_file({k: v.contiguous() for k, v in enc.module.state_dict().items()}, weights)
    return tiff, weights


def _embed_args(inputs, store: Path) -> list[str]:
    tiff, weights = inputs
    return [
        "embed",
        str(tiff),
        "--out",
        str(store),
        "--encoder",
        "test-vit",
        "--weights",
        str(weights),
        "--batch-size",
        "4",  # 32-tile chunks
        "--device",
        "cpu",
    ]


@pytest.fixture(scope="module")
def straight_store(runner, embed_inputs, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("embed-straight") / "s.zarr"
    rc, _, err = _run(runner, _embed_args(embed_inputs, store))
    assert rc == 0, err
    return store


def _done(store: Path) -> np.ndarray:
    try:
        return np.asarray(zarr.open_group(store, mode="r")["done"][:], dtype=bool)
    except (FileNotFoundError, KeyError, ValueError, OSError):
        return np.zeros(0, bool)


def check_store(store: Path, reference: Path) -> int:
    """Every chunk flagged done equals the reference; return how many are done."""
    g, ref = zarr.open_group(store, mode="r"), zarr.open_group(reference, mode="r")
    done = np.asarray(g["done"][:], dtype=bool)
    chunk = int(g.attrs["chunk_tiles"])
    emb, ref_emb = g["embeddings"], ref["embeddings"]
    assert np.array_equal(g["tile_ids"][:], ref["tile_ids"][:])
    for i in np.flatnonzero(done):
        a = emb[i * chunk : (i + 1) * chunk]
        assert np.isfinite(a).all(), i
        np.testing.assert_allclose(a, ref_emb[i * chunk : (i + 1) * chunk], atol=1e-6)
    return int(done.sum())


def test_embed_kill9_then_resume_equals_uninterrupted(
    runner, embed_inputs, straight_store, tmp_path
):
    store = tmp_path / "s.zarr"
    n_chunks = len(_done(straight_store))
    assert n_chunks >= 6
    # 1. between the 3rd chunk's embeddings and its done flag
    rc, _, err = _run(runner, _embed_args(embed_inputs, store), kill="chunk-write:3")
    assert rc == -signal.SIGKILL, err
    assert check_store(store, straight_store) == 2  # the 3rd is not taken as done
    # 2. random: an outside SIGKILL once a random number of chunks are done
    target = random.Random(7).randint(3, n_chunks - 2)
    proc = _start(runner, _embed_args(embed_inputs, store))
    rc, err = _kill_when(proc, lambda: _done(store).sum() >= target)
    assert rc == -signal.SIGKILL, err
    n_done = check_store(store, straight_store)
    assert target <= n_done < n_chunks
    # 3. resume to the end
    rc, _, err = _run(runner, _embed_args(embed_inputs, store))
    assert rc == 0, err
    assert check_store(store, straight_store) == n_chunks
    a = zarr.open_group(store, mode="r")
    b = zarr.open_group(straight_store, mode="r")
    for name in ("embeddings", "tile_ids", "coords", "done"):
        assert np.array_equal(a[name][:], b[name][:]), name
    assert a.attrs["signature"] == b.attrs["signature"]


@pytest.mark.slow
def test_embed_ctrl_c_exits_130_with_one_line_and_resumes(
    runner, embed_inputs, straight_store, tmp_path
):
    store = tmp_path / "s.zarr"
    proc = _start(runner, _embed_args(embed_inputs, store))
    rc, err = _kill_when(proc, lambda: _done(store).sum() >= 2, sig=signal.SIGINT)
    assert rc == 130, err
    assert "Traceback" not in err
    # one message (tqdm may redraw its bar after it at exit)
    assert err.count("napari-seal:") == 1, err[-500:]
    assert "napari-seal: interrupted; finished work is kept, rerun to resume" in err
    assert check_store(store, straight_store) >= 2
    rc, _, err = _run(runner, _embed_args(embed_inputs, store))
    assert rc == 0, err
    assert check_store(store, straight_store) == len(_done(straight_store))


# ---------------------------------------------------------------- widget cancel


@pytest.mark.slow
def test_embed_widget_cancel_leaves_a_resumable_store(
    make_napari_viewer, qtbot, tmp_path
):
    """The Embed widget's Cancel (Job.cancel) keeps finished chunks; rerun resumes."""
    from napari_seal._widgets._embed import EmbedWidget
    from napari_seal._widgets._load import LoadWidget
    from napari_seal.embedding.run import embed
    from napari_seal.io.hest import bundled_sample_path

    viewer = make_napari_viewer()
    load = LoadWidget(viewer)
    load.bundled_button.click()
    qtbot.waitUntil(lambda: not load.job.running, timeout=60_000)
    widget = EmbedWidget(viewer)
    widget.encoder_combo.setCurrentIndex(widget.encoder_combo.findData("color-stats"))
    widget.batch_spin.setValue(2)  # 16-tile chunks
    store = tmp_path / "w.zarr"
    widget.store_edit.setText(str(store))
    widget.run_button.click()
    qtbot.waitUntil(lambda: _done(store).sum() >= 1, timeout=120_000)
    widget.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.job.running, timeout=120_000)
    assert widget.job.cancelled
    assert widget.job.error is None
    done = _done(store)
    assert 1 <= done.sum() < len(done)
    widget.run_button.click()
    qtbot.waitUntil(lambda: not widget.job.running, timeout=120_000)
    assert widget.job.error is None
    assert _done(store).all()
    ref = embed(
        bundled_sample_path(),
        "color-stats",
        tmp_path / "ref.zarr",
        batch_size=2,
        device="cpu",
    )
    a, b = zarr.open_group(store, mode="r"), zarr.open_group(ref, mode="r")
    np.testing.assert_allclose(a["embeddings"][:], b["embeddings"][:], atol=1e-5)
