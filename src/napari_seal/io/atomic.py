"""Atomic file writes: write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from napari_seal.errors import OutputPathError

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "checked_output_path",
    "ensure_writable_dir",
    "remove_stale_temporaries",
    "temporary_prefix",
]

# Every temporary napari-seal writes is named ``.<final name>.tmp-<pid>-<random>``
# (plus a suffix; run checkpoints: ``.tmp-<tag>-<pid>``), next to the file or folder
# it becomes: a killed process leaves it behind, and the pid says whose it was.
_TMP_NAME = re.compile(
    r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)-[0-9A-Za-z_]+(\.[0-9A-Za-z]+)?$"
)
_CKPT_TMP_NAME = re.compile(r"^\.tmp-(?P<name>.+)-(?P<pid>\d+)$")
_IMPORT_TIME = time.time()


def checked_output_path(path: str | Path) -> Path:
    """``Path(path)``, refusing a NUL character, which no file name can hold.

    (The OS call would fail with a bare ``ValueError`` only once the output is made.)
    """
    if "\x00" in str(os.fspath(path)):
        msg = (f"the output path {str(path)!r} contains a NUL character (\\x00), "
               "which no file name can hold; type the path again")
        raise OutputPathError(msg)
    return Path(path)


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) and check it is writable.

    Raises
    ------
    OutputPathError
        When the folder cannot be created or written, with what to do about it.
    """
    path = checked_output_path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        msg = (f"cannot create output folder {path}: {err.strerror}; "
               "choose another --out")
        raise OutputPathError(msg) from err
    if not os.access(path, os.W_OK):
        msg = (f"output folder {path} is not writable; choose another --out or fix "
               "its permissions")
        raise OutputPathError(msg)
    return path


def temporary_prefix(name: str) -> str:
    """The prefix of this process's temporaries for the file or folder ``name``."""
    return f".{name}.tmp-{os.getpid()}-"


def _process_start_time() -> float:
    """When this process started, in seconds since the epoch (else: import time).

    From the start tick in ``/proc/self/stat`` and the clock since boot
    (``/proc/stat``'s ``btime`` is whole seconds: too coarse for a rerun right after
    a kill).
    """
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return min(time.time() - age, _IMPORT_TIME)
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORT_TIME


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(
    folder: str | Path, *, name: str | None = None
) -> list[Path]:
    """Remove what killed napari-seal writers left in ``folder``; return it.

    Only entries that are provably ours and stale go: named like our temporaries
    (``.<name>.tmp-<pid>-<random>``, or a run's ``checkpoints/.tmp-<tag>-<pid>``; with
    ``name``, only those for that final name), written by a process that is no longer
    running, and last modified before this process started. Anything else in
    ``folder`` (the user's files) is never touched; errors are ignored (a leftover
    that cannot be removed is still never taken for a finished file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    started = _process_start_time()
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        match = _TMP_NAME.match(entry.name) or _CKPT_TMP_NAME.match(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        try:
            stale = entry.stat(follow_symlinks=False).st_mtime < started
        except OSError:
            continue
        if not stale or _pid_alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    A crash or exception leaves ``path`` untouched (old content or absent) and removes
    the temporary file, so a partial file is never mistaken for a finished one.
    """
    path = checked_output_path(path)
    ensure_writable_dir(path.parent)
    remove_stale_temporaries(path.parent, name=path.name)
    fd, tmp = tempfile.mkstemp(
        prefix=temporary_prefix(path.name), suffix=suffix or ".tmp", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the finished file the usual permissions (0666 & ~umask)
    tmp_path.chmod(0o666 & ~_umask())
    try:
        yield tmp_path
        tmp_path.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (fsync before the rename)."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        if isinstance(err, OutputPathError):
            raise
        msg = (f"cannot write {path}: {err.strerror or err}; free disk space or "
               "choose another path")
        raise OutputPathError(msg) from err
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
