"""One writer at a time on an embedding store: threads and processes wait their turn."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zarr
from test_embed_helpers import array_slide, synthetic_he

from napari_seal.embedding.store import open_or_create_store
from napari_seal.embedding.store_lock import store_write_lock
from napari_seal.embedding.tile_flags import tile_done_flags
from napari_seal.errors import OutputPathError
from napari_seal.tiling.grid import TilingConfig, make_tile_grid

SIGNATURE = {
    "format": "napari-seal.embeddings/1",
    "slide": {"path": None},
    "encoder": {"name": "synthetic"},
}
HOLD = (
    "import sys\n"
    "from napari_seal.embedding.store_lock import store_write_lock\n"
    "with store_write_lock(sys.argv[1]):\n"
    "    print('locked', flush=True)\n"
    "    sys.stdin.readline()\n"
)


@pytest.fixture(scope="module")
def grid():
    slide = array_slide(synthetic_he(1200, 1600))
    return make_tile_grid(slide, config=TilingConfig(tile_px=64, mpp=1.0))


def _writer(path, grid):
    return open_or_create_store(
        path,
        signature=SIGNATURE,
        grid=grid,
        embed_dim=4,
        chunk_tiles=8,
        dtype="float32",
        precision="float32",
    )


def _hold(path):
    """Another process that holds the store's lock until a line on its stdin."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _done(path, writer):
    group = zarr.open_group(path, mode="r")
    return tile_done_flags(group, writer.n_tiles, writer.chunk_tiles)


def _wait_blocked(thread: threading.Thread, s: float = 0.4) -> None:
    thread.start()
    thread.join(s)
    assert thread.is_alive(), "the write went ahead while the store was locked"


def test_a_tile_write_waits_for_another_threads_lock(tmp_path, grid):
    path = tmp_path / "s.zarr"
    w = _writer(path, grid)
    vals = np.full((2, 4), 7.0, np.float32)
    t = threading.Thread(target=w.write_tiles, args=(np.array([3, 5]), vals))
    with store_write_lock(path):
        _wait_blocked(t)
        assert not _done(path, w)[[3, 5]].any()
    t.join(10)
    assert not t.is_alive()
    assert _done(path, w)[[3, 5]].all()
    emb = zarr.open_group(path, mode="r")["embeddings"]
    np.testing.assert_array_equal(emb[[3, 5]], vals)


def test_a_chunk_write_waits_for_another_process_and_times_out(tmp_path, grid):
    path = tmp_path / "s.zarr"
    w = _writer(path, grid)
    holder = _hold(path)
    try:
        assert holder.stdout.readline().strip() == "locked"
        # the lock is the other process's: this process's threads cannot take it
        t0 = time.monotonic()
        with (
            pytest.raises(OutputPathError, match="locked by another writer"),
            store_write_lock(path, timeout_s=0.3),
        ):
            pass
        assert time.monotonic() - t0 >= 0.3
        a, b = w.chunk_range(1)
        vals = np.full((b - a, 4), 2.0, np.float32)
        t = threading.Thread(target=w.write_chunk, args=(1, vals))
        _wait_blocked(t)
        assert not _done(path, w)[a:b].any()
        holder.stdin.write("\n")
        holder.stdin.flush()
        t.join(10)
        assert not t.is_alive()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(10)
    assert _done(path, w)[a:b].all()
    emb = zarr.open_group(path, mode="r")["embeddings"]
    np.testing.assert_array_equal(emb[a:b], vals)


def test_a_writer_that_died_holding_the_lock_does_not_block_the_store(
    tmp_path, grid
):
    path = tmp_path / "s.zarr"
    w = _writer(path, grid)
    holder = _hold(path)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(10)
    w.write_tiles(np.array([0]), np.ones((1, 4), np.float32))
    assert _done(path, w)[0]
