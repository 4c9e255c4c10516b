"""Killed runs' temporaries are cleaned by the next run; nothing else is (issue 13).

Every temporary napari-seal writes is ``.<final name>.tmp-<pid>-<random>`` next to
what it becomes (a run's half-written checkpoints: ``checkpoints/.tmp-<tag>-<pid>``).
The next writer removes those whose process is gone and that are older than itself;
user files, even look-alikes, and temporaries of live processes stay.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import napari_seal.training.runs as runs
from napari_seal.io.atomic import atomic_write_text, remove_stale_temporaries


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _age(path: Path, seconds: float = 3600) -> Path:
    past = time.time() - seconds
    os.utime(path, (past, past))
    return path


def _make(path: Path, *, folder: bool = False, old: bool = True) -> Path:
    if folder:
        path.mkdir()
        (path / "optim.pt").write_bytes(b"half")
    else:
        path.write_text("half")
    return _age(path) if old else path


def test_run_folder_leftovers_removed_user_files_kept(tmp_path):
    dead = _dead_pid()
    out = tmp_path / "run"
    (out / runs.CHECKPOINTS).mkdir(parents=True)
    ck = out / runs.CHECKPOINTS
    stale = [
        _make(out / f".{runs.CONFIG}.tmp-{dead}-k2j_x9aa.tmp"),
        _make(out / f".{runs.HEADS}.tmp-{dead}-abcdefgh.safetensors"),
        _make(ck / f".tmp-epoch-001-{dead}", folder=True),
    ]
    kept = [
        _make(out / "notes.txt"),
        _make(out / ".config.json.bak"),
        _make(out / ".x.tmp-notapid-abc"),  # not our pattern (no pid)
        _make(out / "x.tmp-123-abc"),  # no leading dot
        _make(out / f".{runs.CONFIG}.tmp-{os.getpid()}-zzzzzzzz.tmp"),  # ours, alive
        _make(out / f".{runs.CONFIG}.tmp-{dead}-fresh123.tmp", old=False),  # too new
        _make(ck / "epoch-002", folder=True),  # a (damaged) checkpoint, not a temp
    ]
    removed = runs.remove_stale_leftovers(out)
    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert runs.remove_stale_leftovers(tmp_path / "missing") == []


def test_name_filter_and_foreign_folders(tmp_path):
    dead = _dead_pid()
    mine = _make(tmp_path / f".sample.tmp-{dead}-a1b2c3d4", folder=True)
    other = _make(tmp_path / f".other.tmp-{dead}-a1b2c3d4", folder=True)
    assert remove_stale_temporaries(tmp_path, name="sample") == [mine]
    assert other.exists()
    target = tmp_path / "file.txt"
    leftover = _make(tmp_path / f".file.txt.tmp-{dead}-q1w2e3r4.tmp")
    atomic_write_text(target, "ok")  # the next write of the same file cleans it
    assert target.read_text() == "ok"
    assert not leftover.exists()
    assert other.exists()


KILL_INSIDE_WRITE = r"""
import os, signal, sys
from pathlib import Path
from napari_seal.io.atomic import atomic_path
with atomic_path(Path(sys.argv[1]), suffix=".safetensors") as tmp:
    tmp.write_bytes(b"half written")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill9_inside_an_atomic_write_is_cleaned_by_the_next_run(tmp_path):
    target = tmp_path / "heads.safetensors"
    rc = subprocess.run([sys.executable, "-c", KILL_INSIDE_WRITE, str(target)],
                        check=False).returncode
    assert rc == -signal.SIGKILL
    left = [p for p in tmp_path.iterdir()
            if p.name.startswith(".heads.safetensors.tmp-")]
    assert len(left) == 1
    assert not target.exists()
    _age(left[0])  # the next run starts later than the killed one wrote
    atomic_write_text(target, "done")
    assert [p.name for p in tmp_path.iterdir()] == ["heads.safetensors"]


def test_flat_slide_cache_leftovers_cleaned_when_a_cache_is_built(tmp_path):
    from PIL import Image

    from napari_seal.io.slide.core import open_slide

    cache = tmp_path / "cache"
    cache.mkdir()
    dead = _dead_pid()
    leftover = _make(cache / f".other-0123.zarr.tmp-{dead}-deadbeef", folder=True)
    alive = _make(cache / f".other-0123.zarr.tmp-{os.getppid()}-deadbeef", folder=True)
    user = _make(cache / "keep.me")
    png = tmp_path / "slide.png"
    rng = np.random.default_rng(13)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(png)
    slide = open_slide(png, mpp=1.0, cache_dir=cache)
    assert slide.levels[0].shape[:2] == (300, 400)
    assert not leftover.exists()
    assert alive.exists()
    assert user.exists()


def test_training_resume_removes_a_killed_checkpoint_write(tmp_path):
    """What a kill inside a checkpoint write leaves is gone after the next start."""
    from napari_seal.io.hest import bundled_sample_path, load_sample
    from napari_seal.training.config import config_from_preset
    from napari_seal.training.trainer import train

    out = tmp_path / "run"
    (out / runs.CHECKPOINTS).mkdir(parents=True)
    dead = _dead_pid()
    half = _make(out / runs.CHECKPOINTS / f".tmp-epoch-001-{dead}", folder=True)
    tmp_cfg = _make(out / f".{runs.CONFIG}.tmp-{dead}-abcdefgh.tmp")
    config = config_from_preset("cpu-smoke", encoder="test-vit", max_steps=1)
    # --resume of a run killed inside its first checkpoint write
    train([load_sample(bundled_sample_path())], out=out, config=config, resume=True)
    assert not half.exists()
    assert not tmp_cfg.exists()
    assert (out / runs.DONE).exists()
    runs.load_run(out)


def test_python_writers_refuse_a_nul_in_the_output_name(tmp_path):
    """The Python API (which the napari widgets call) gives an OutputPathError that
    says what to fix, not the OS layer's bare ValueError, and creates nothing."""
    import pytest

    from napari_seal.embedding.store import open_or_create_store
    from napari_seal.errors import OutputPathError
    from napari_seal.io.atomic import ensure_writable_dir

    bad = tmp_path / "a\x00b"
    for write in (
        lambda: atomic_write_text(bad, "x"),
        lambda: atomic_write_text(bad / "f.json", "x"),
        lambda: ensure_writable_dir(bad),
        lambda: runs.check_output_dir(bad, resume=False),
        lambda: open_or_create_store(bad, signature={}, grid=None, embed_dim=8,
                                     chunk_tiles=8, dtype="float16",
                                     precision="fp32"),
    ):
        with pytest.raises(OutputPathError, match="NUL character"):
            write()
    assert list(tmp_path.iterdir()) == []
