"""Atomic file writes: write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from napari_seal.errors import OutputPathError

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "ensure_writable_dir"]


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) and check it is writable.

    Raises
    ------
    OutputPathError
        When the folder cannot be created or written, with what to do about it.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        msg = f"cannot create output folder {path}: {err.strerror}; choose another --out"
        raise OutputPathError(msg) from err
    if not os.access(path, os.W_OK):
        msg = f"output folder {path} is not writable; choose another --out or fix its permissions"
        raise OutputPathError(msg)
    return path


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
    path = Path(path)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the finished file the usual permissions (0666 & ~umask)
    tmp_path.chmod(0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
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
        msg = f"cannot write {path}: {err.strerror or err}; free disk space or choose another path"
        raise OutputPathError(msg) from err
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))
