"""One writer at a time on an embedding store, across threads and processes.

A live view writes single tiles into a store (a read-modify-write of their zarr
chunks) while a batch ``embed`` may write whole chunks of the same store, from another
thread of napari or from another process. Without exclusion, a tile write that read a
chunk before the batch wrote it puts the old (NaN) rows back after the batch has set
the chunk's ``done`` flag: tiles flagged done but empty. :func:`store_write_lock`
serialises every write of :class:`~napari_seal.embedding.store.StoreWriter`: a
``threading.Lock`` per store path within the process and an advisory ``flock`` on the
store directory between processes (released by the OS if a process dies; where
``fcntl`` does not exist, e.g. Windows, only threads are excluded). Each write holds
it for one chunk's worth of I/O (milliseconds).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from napari_seal.errors import OutputPathError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_TIMEOUT_S", "store_write_lock"]

LOCK_TIMEOUT_S = 300.0
_POLL_S = 0.005
_guard = threading.Lock()
_thread_locks: dict[str, threading.Lock] = {}


def _thread_lock(key: str) -> threading.Lock:
    with _guard:
        return _thread_locks.setdefault(key, threading.Lock())


def _busy(path: str, timeout_s: float) -> OutputPathError:
    msg = (
        f"the embedding store {path} has been locked by another writer for over "
        f"{timeout_s:.0f} s; wait for that embedding job to finish (or stop it), "
        "then try again"
    )
    return OutputPathError(msg)


@contextmanager
def store_write_lock(
    path: str | os.PathLike, timeout_s: float = LOCK_TIMEOUT_S
) -> Iterator[None]:
    """Hold the write lock of the store at ``path`` (a directory) for a block.

    Raises :class:`~napari_seal.errors.OutputPathError` when another writer holds it
    for longer than ``timeout_s``.
    """
    key = os.path.realpath(Path(path))
    deadline = time.monotonic() + timeout_s
    lock = _thread_lock(key)
    if not lock.acquire(timeout=max(0.0, timeout_s)):
        raise _busy(key, timeout_s)
    fd = None
    try:
        if fcntl is not None:
            fd = os.open(key, os.O_RDONLY)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise _busy(key, timeout_s) from None
                    time.sleep(_POLL_S)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing the descriptor releases its flock
        lock.release()
