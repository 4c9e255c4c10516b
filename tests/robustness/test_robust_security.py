"""Security (issue 7): no code from pickles, no writes outside --out, inputs untouched,
no listening sockets unless a scheduler is asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import napari_seal.training.runs as runs
from napari_seal.cli import main
from napari_seal.errors import SealError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Evil:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    """The same code-running payload in each container a loader may meet."""
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    payload = {"state_dict": {"w": torch.zeros(2)}, "x": Evil(marker)}
    out["torch-zip"] = folder / "zip.pth"
    torch.save(payload, out["torch-zip"])  # torch's zip format, pickle inside
    out["raw-pickle"] = folder / "raw.pth"
    out["raw-pickle"].write_bytes(pickle.dumps(payload, protocol=2))
    out["legacy-torch"] = folder / "legacy.pth"
    torch.save(payload, out["legacy-torch"], _use_new_zipfile_serialization=False)
    return out


KINDS = ["torch-zip", "raw-pickle", "legacy-torch"]


def _fresh_run(tiny_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


@pytest.mark.parametrize("kind", KINDS)
def test_crafted_pickles_are_refused_by_every_loader(kind, tiny_run, tmp_path):
    from napari_seal.models.factory import create_encoder
    from napari_seal.models.seal_checkpoint import load_official_seal
    from napari_seal.models.weights import load_state_dict_file
    from napari_seal.predict.saved_probe import load_probe

    marker = tmp_path / "PWNED"
    evil = evil_files(tmp_path / "evil", marker)[kind]
    attempts = []

    def refused(fn, *args, **kw):
        attempts.append(fn)
        with pytest.raises(SealError):
            fn(*args, **kw)
        assert not marker.exists(), f"{fn} ran the payload"

    refused(load_state_dict_file, evil)  # encoder weights, the shared loader
    refused(create_encoder, "test-vit", weights=evil)  # --weights of every command
    refused(load_official_seal, evil, backbone="uni")  # SEAL release checkpoint
    refused(load_probe, evil)  # a saved probe head (--head)
    # a run folder whose adapter / heads were replaced by the payload
    for name in ("adapter.safetensors", "heads.safetensors"):
        run = _fresh_run(Path(tiny_run), tmp_path / name)
        shutil.copy(evil, run / name)
        refused(runs.load_run, run)
    # a resume checkpoint with the payload in each of its files
    for name in ("optim.pt", "rng.pt", "trainable.safetensors"):
        run = tmp_path / f"ck-{name}"
        ck = run / runs.CHECKPOINTS / "epoch-001"
        ck.mkdir(parents=True)
        torch.save({"optimizer": {}}, ck / "optim.pt")
        torch.save({"torch": torch.get_rng_state()}, ck / "rng.pt")
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, ck / "trainable.safetensors")
        (ck / "state.json").write_text(json.dumps({"global_step": 5}))
        shutil.copy(evil, ck / name)
        assert runs.latest_checkpoint(run) == ck
        refused(runs.read_checkpoint, ck)
    assert len(attempts) == 9
    assert not marker.exists()


def test_resume_from_a_poisoned_checkpoint_runs_nothing(tmp_path):
    """The trainer's own resume path meets the payload in optim.pt: refused."""
    from napari_seal.io.hest import bundled_sample_path, load_sample
    from napari_seal.training.config import config_from_preset
    from napari_seal.training.trainer import train

    cfg = config_from_preset("cpu-smoke", encoder="test-vit", max_steps=2)
    sample = load_sample(bundled_sample_path())
    out = tmp_path / "run"
    from napari_seal.training.trainer import iter_train

    gen = iter_train([sample], out=out, config=cfg, device="cpu")
    for event in gen:
        if getattr(event, "step", 0) == 1 and type(event).__name__ == "StepEvent":
            break
    gen.close()  # a cancel checkpoint at step 1
    ck = runs.latest_checkpoint(out)
    assert ck is not None
    marker = tmp_path / "PWNED"
    shutil.copy(evil_files(tmp_path / "evil", marker)["torch-zip"], ck / "optim.pt")
    with pytest.raises(SealError, match="unreadable"):
        train([sample], out=out, config=cfg, resume=True, device="cpu")
    assert not marker.exists()


# ------------------------------------------------------------- paths and writes


def _snapshot(root: Path, *, skip: Path | None = None) -> dict[str, tuple]:
    snap = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        st = p.lstat()
        digest = None
        if p.is_file():
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
        snap[str(p)] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return snap


def _chmod_tree(root: Path, *, writable: bool) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.stat().st_mode
        if writable:
            p.chmod(mode | stat.S_IWUSR)
        else:
            p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_full_pipeline_writes_only_inside_out_and_never_touches_inputs(
    tmp_path, capsys
):
    """import -> train -> embed -> predict -> export with hostile metadata paths,
    on a read-only input folder: every input byte and mtime is unchanged, and
    nothing outside --out changes."""
    from napari_seal.io.hest import bundled_sample_path

    inputs = tmp_path / "inputs"
    shutil.copytree(bundled_sample_path(), inputs / "hest")
    meta = inputs / "hest" / "metadata" / "her2st_C2.json"
    m = json.loads(meta.read_text())
    # paths a hostile or careless metadata file may carry: never followed, never written
    m.update(
        image_path="../../../../etc/passwd",
        wsi_path=str(tmp_path / "outside.tif"),
        output_dir="../../escape",
        st_path="/etc/passwd",
    )
    meta.write_text(json.dumps(m))
    from safetensors.torch import save_file

    from napari_seal.models.factory import create_encoder

    torch.manual_seed(0)
    enc = create_encoder("test-vit")
    weights = inputs / "test-vit.safetensors"
    save_file({k: v.contiguous() for k, v in enc.module.state_dict().items()}, weights)
    _chmod_tree(inputs, writable=False)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out"
    before_inputs = _snapshot(inputs)
    before_parent = _snapshot(tmp_path, skip=out)
    cwd = Path.cwd()
    try:
        os.chdir(work)  # relative paths resolve here; ../ would escape it
        sample, run = out / "sample", out / "run"
        hest = inputs / "hest"

        def cli(*args):
            assert main([str(a) for a in args]) == 0, args

        cli("import", "hest", hest, "--id", "her2st_C2", "--out", sample)
        cli(
            "train",
            sample,
            "--out",
            run,
            "--encoder",
            "test-vit",
            "--weights",
            weights,
            "--preset",
            "cpu-smoke",
            "--max-steps",
            1,
            "--device",
            "cpu",
        )
        cli(
            "embed",
            hest,
            "--out",
            out / "e.zarr",
            "--encoder",
            "test-vit",
            "--weights",
            weights,
            "--device",
            "cpu",
        )
        cli("predict", hest, "--run", run, "--out", out / "p.h5ad", "--device", "cpu")
        cli("export", out / "e.zarr", "--format", "trident-h5", "--out", out / "e.h5")
        after_inputs = _snapshot(inputs)
        after_parent = _snapshot(tmp_path, skip=out)
    finally:
        os.chdir(cwd)
        _chmod_tree(inputs, writable=True)  # so pytest can clean up
    capsys.readouterr()
    assert after_inputs == before_inputs  # bytes (sha256), sizes, mtimes, modes
    after_parent.pop(str(work), None)
    before_parent.pop(str(work), None)
    assert after_parent == before_parent, set(after_parent) ^ set(before_parent)
    assert sorted(p.name for p in work.iterdir()) == ["out"]
    assert not (tmp_path / "escape").exists()
    assert not (tmp_path / "outside.tif").exists()


def test_run_config_pointing_outside_is_read_only_and_refused(tiny_run, tmp_path):
    """A run whose config.json names ../../etc/passwd as weights: read, refused."""
    from napari_seal.errors import WeightsError

    run = _fresh_run(Path(tiny_run), tmp_path)
    cfg = json.loads((run / runs.CONFIG).read_text())
    cfg["weights"] = "../../../../../../etc/passwd"
    (run / runs.CONFIG).write_text(json.dumps(cfg))
    before = _snapshot(tmp_path)
    passwd = Path("/etc/passwd")
    st = passwd.stat() if passwd.exists() else None
    with pytest.raises(WeightsError):
        runs.load_run(run)
    assert _snapshot(tmp_path) == before
    if st is not None:
        assert passwd.stat().st_mtime_ns == st.st_mtime_ns


def test_sample_ids_cannot_escape_the_output_folder(tmp_path):
    from napari_seal.errors import BadInputError
    from napari_seal.io.hest import bundled_sample_path, load_sample

    for bad in ("../../etc/passwd", "/etc/passwd", "a/../../b", ".."):
        with pytest.raises(BadInputError):
            load_sample(bundled_sample_path(), sample_id=bad)


# --------------------------------------------------------------------- network


def _listening(pid: int) -> set[tuple]:
    import psutil

    found = set()
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found.add((p.pid, c.laddr))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


NO_LISTEN_CHILD = r"""
import sys, threading, time
import psutil
from napari_seal.embedding.run import embed
seen, stop = set(), threading.Event()
def poll():
    me = psutil.Process()
    while not stop.is_set():
        for p in [me, *me.children(recursive=True)]:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    seen.add(str(c.laddr))
        time.sleep(0.02)
t = threading.Thread(target=poll, daemon=True); t.start()
embed(sys.argv[1], "color-stats", sys.argv[2], device="cpu")
stop.set(); t.join()
print("LISTEN", sorted(seen), "distributed" in sys.modules)
"""


def test_default_embed_opens_no_listening_socket(tmp_path):
    from napari_seal.testing import write_synthetic_slide

    tiff = write_synthetic_slide(tmp_path / "s.tif", width_px=1200, height_px=900)
    proc = subprocess.Popen(
        [sys.executable, "-c", NO_LISTEN_CHILD, str(tiff), str(tmp_path / "s.zarr")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen_outside: set = set()
    try:
        while proc.poll() is None:
            seen_outside |= _listening(proc.pid)
            time.sleep(0.02)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    line = [x for x in out.splitlines() if x.startswith("LISTEN")][-1]
    assert line == "LISTEN [] False", line  # no socket, dask.distributed not imported
    assert not seen_outside


def test_scheduler_address_is_used_only_when_given(tmp_path):
    """With --scheduler the address is contacted (here: nobody listens -> a
    one-line SchedulerError naming it); nothing else ever connects or listens."""
    import socket

    from napari_seal.embedding.run import embed
    from napari_seal.errors import SchedulerError
    from napari_seal.testing import write_synthetic_slide

    tiff = write_synthetic_slide(tmp_path / "s.tif", width_px=800, height_px=600)
    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"tcp://127.0.0.1:{port}"

    before = _listening(os.getpid())
    stop = threading.Event()
    seen: set = set()

    def poll():
        while not stop.is_set():
            seen.update(_listening(os.getpid()) - before)
            time.sleep(0.02)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        with pytest.raises(SchedulerError, match=str(port)):
            embed(
                tiff,
                "color-stats",
                tmp_path / "d.zarr",
                scheduler=addr,
                scheduler_timeout_s=2,
                device="cpu",
            )
        embed(tiff, "color-stats", tmp_path / "l.zarr", device="cpu")
    finally:
        stop.set()
        t.join()
    assert not seen, seen  # neither path opened a listening socket in this process
