"""Whole-slide embedding into a zarr store: layout, resume, signature, errors."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import zarr
from test_embed_helpers import array_slide, make_vit, synthetic_he

from napari_seal.embedding.inputs import tiling_for
from napari_seal.embedding.run import embed, iter_embed
from napari_seal.errors import (
    BadInputError,
    CacheMismatchError,
    EncoderMismatchError,
    OutputPathError,
)


@pytest.fixture(scope="module")
def vit_encoder():
    return make_vit()


@pytest.fixture(scope="module")
def slide():
    return array_slide()


@pytest.fixture(scope="module")
def full_store(tmp_path_factory, slide, vit_encoder):
    path = tmp_path_factory.mktemp("embed") / "full.zarr"
    # fp32: the values are compared with encode_images at fp32 tolerances
    embed(slide, vit_encoder, path, batch_size=4, chunk_tiles=8, precision="fp32")
    return path


def test_store_layout_attrs_and_values(full_store, slide, vit_encoder):
    from napari_seal.models.inference import encode_images
    from napari_seal.tiling.grid import make_tile_grid, read_tiles

    g = zarr.open_group(full_store, mode="r")
    attrs = dict(g.attrs)
    grid = make_tile_grid(slide, config=tiling_for(vit_encoder))
    n = len(grid.tile_ids)
    assert n > 8  # several chunks
    assert g["embeddings"].shape == (n, vit_encoder.embed_dim)
    assert g["embeddings"].dtype == np.float32
    assert g["tile_ids"].dtype == np.int64
    assert g["coords"].dtype == np.int64
    np.testing.assert_array_equal(g["tile_ids"][:], grid.tile_ids)
    np.testing.assert_array_equal(g["coords"][:], grid.coords)
    assert g["coords"].shape == (n, 2)
    assert g["done"].shape == (-(-n // 8),)
    assert bool(np.all(g["done"][:]))
    assert attrs["embed_dim"] == vit_encoder.embed_dim
    assert attrs["precision"] == "fp32"
    assert attrs["inference"]["precision"] == "fp32"
    assert attrs["inference"]["memory_format"] == "contiguous"  # a ViT
    assert attrs["inference"]["read_workers"] >= 1  # auto: what the run used
    assert attrs["grid"]["n_cols"] == grid.n_cols
    sig = attrs["signature"]
    assert sig["encoder"]["name"] == vit_encoder.name
    assert sig["encoder"]["weights_sha256"].startswith("module:")
    assert sig["tiling"]["tile_px"] == vit_encoder.tile_px
    assert {"slide", "tiling", "package_version", "dtype"} <= set(sig)
    # row k of the store is the embedding of tile k (spot-check a few tiles)
    idx = np.array([0, n // 2, n - 1])
    want = encode_images(
        vit_encoder, read_tiles(slide, grid, idx), batch_size=4, precision="fp32"
    )
    np.testing.assert_allclose(
        g["embeddings"].get_orthogonal_selection((idx, slice(None))),
        want,
        rtol=1e-4,
        atol=1e-5,
    )


def test_resume_after_interrupt_matches_uninterrupted(
    tmp_path, full_store, slide, vit_encoder
):
    path = tmp_path / "resumed.zarr"
    gen = iter_embed(
        slide, vit_encoder, path, batch_size=4, chunk_tiles=8, precision="fp32"
    )
    for event in gen:
        if event.info.get("chunks_done", 0) >= 2:
            break
    gen.close()  # cancel mid-run (the widget's cancel / Ctrl-C)
    done = zarr.open_group(path, mode="r")["done"][:]
    n_done = int(done.sum())
    assert 2 <= n_done < len(done)
    events = []
    embed(
        slide,
        vit_encoder,
        path,
        batch_size=4,
        precision="fp32",
        progress=events.append,
    )
    first = next(e for e in events if e.total)
    assert "resuming" in first.message
    n = events[-1].total
    assert events[-1].done == n
    # only the missing chunks were computed
    skipped = min(n, n_done * 8)
    assert events[-1].info["new_tiles"] == n - skipped
    ref = zarr.open_group(full_store, mode="r")["embeddings"][:]
    got = zarr.open_group(path, mode="r")
    assert bool(np.all(got["done"][:]))
    np.testing.assert_allclose(got["embeddings"][:], ref, rtol=1e-5, atol=1e-6)


def test_rerun_of_finished_store_computes_nothing(full_store, slide, vit_encoder):
    events = []
    embed(
        slide,
        vit_encoder,
        full_store,
        batch_size=4,
        precision="fp32",
        progress=events.append,
    )
    assert events[-1].info["new_tiles"] == 0
    assert events[-1].done == events[-1].total


def test_signature_mismatch_names_the_key(full_store, slide, vit_encoder):
    with pytest.raises(CacheMismatchError, match=r"tiling\.stride_px") as err:
        embed(slide, vit_encoder, full_store, stride_px=80, precision="fp32")
    assert "None" in str(err.value)
    assert "80" in str(err.value)
    assert "--out" in str(err.value)
    other = array_slide(synthetic_he(seed=1)[:, :1200])
    with pytest.raises(CacheMismatchError, match=r"slide\.") as err:
        embed(other, vit_encoder, full_store, precision="fp32")


def test_other_weights_are_a_mismatch(tmp_path, slide, vit_encoder):
    import copy

    import torch

    path = tmp_path / "w.zarr"
    embed(slide, vit_encoder, path, max_tiles=4)
    changed = copy.deepcopy(vit_encoder)
    with torch.no_grad():
        next(changed.module.parameters()).add_(1.0)
    with pytest.raises(CacheMismatchError, match=r"encoder\.weights_sha256"):
        embed(slide, changed, path, max_tiles=4)


def test_unwritable_store_path(tmp_path, slide, vit_encoder):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputPathError, match="--out"):
        embed(slide, vit_encoder, blocker / "store.zarr", max_tiles=2)
    with pytest.raises(OutputPathError, match="not an embedding store"):
        embed(slide, vit_encoder, blocker, max_tiles=2)


def test_no_tissue_says_how_to_fix(tmp_path, vit_encoder):
    blank = array_slide(np.full((700, 700, 3), 245, np.uint8))
    with pytest.raises(BadInputError, match="tissue-threshold"):
        embed(blank, vit_encoder, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_tile_larger_than_slide(tmp_path, vit_encoder):
    tiny = array_slide(synthetic_he(100, 120), mpp=0.5)
    with pytest.raises(EncoderMismatchError, match="--mpp"):
        embed(tiny, vit_encoder, tmp_path / "s.zarr")


def test_reading_overlaps_compute_and_prefetch_is_bounded(
    tmp_path, monkeypatch, slide, vit_encoder
):
    """Reads run ahead of the model (overlap) but never more than the prefetch depth."""
    import napari_seal.embedding.run as embed_mod
    import napari_seal.tiling.grid as tiling

    real_read = tiling.read_tiles
    state = {"read": 0, "encoded": 0, "max_ahead": 0}
    lock = threading.Lock()
    delay_s = 0.03

    def slow_read(sl, grid, index):
        state.setdefault("t_first", time.monotonic())
        time.sleep(delay_s)
        out = real_read(sl, grid, index)
        with lock:
            state["read"] += 1
            state["max_ahead"] = max(
                state["max_ahead"], state["read"] - state["encoded"]
            )
        return out

    def fake_encode_fn(encoder, *, batch_size, device, session):
        def encode(tiles):
            time.sleep(delay_s)
            with lock:
                state["encoded"] += 1
                state["t_last"] = time.monotonic()
            return np.zeros((len(tiles), encoder.embed_dim), np.float32)

        return encode

    monkeypatch.setattr(tiling, "read_tiles", slow_read)
    monkeypatch.setattr(embed_mod, "_encode_fn", fake_encode_fn)
    embed(
        slide,
        vit_encoder,
        tmp_path / "o.zarr",
        batch_size=2,
        chunk_tiles=8,
        prefetch_batches=3,
        read_workers=2,
    )
    wall = state["t_last"] - state["t_first"]  # the pipeline, not the set-up
    n_batches = state["encoded"]
    assert n_batches >= 10
    serial = 2 * delay_s * n_batches
    assert wall < 0.8 * serial, (wall, serial)  # reading hid behind "compute"
    assert state["max_ahead"] <= 3 + 1  # bounded: prefetch depth (+ the one in hand)


def test_float16_storage(tmp_path, slide, vit_encoder):
    path = tmp_path / "h.zarr"
    embed(slide, vit_encoder, path, dtype="float16", max_tiles=5)
    g = zarr.open_group(path, mode="r")
    assert g["embeddings"].dtype == np.float16
    assert g.attrs["signature"]["dtype"] == "float16"
    assert g["embeddings"].shape[0] == 5


def test_full_disk_keeps_finished_chunks(tmp_path, monkeypatch, slide, vit_encoder):
    import errno

    import napari_seal.embedding.store as _embed_store

    real_init = _embed_store.StoreWriter.__init__

    class FullAfterTwo:
        def __init__(self, array):
            self.array, self.writes = array, 0

        def __getattr__(self, name):
            return getattr(self.array, name)

        def __setitem__(self, key, value):
            self.writes += 1
            if self.writes > 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.array[key] = value

    def init(self, group, path):
        real_init(self, group, path)
        self.embeddings = FullAfterTwo(self.embeddings)

    monkeypatch.setattr(_embed_store.StoreWriter, "__init__", init)
    path = tmp_path / "full.zarr"
    with pytest.raises(OutputPathError, match="free disk space") as err:
        embed(slide, vit_encoder, path, batch_size=4, chunk_tiles=8, max_tiles=24)
    assert "2 of" in str(err.value)
    monkeypatch.undo()
    assert int(zarr.open_group(path, mode="r")["done"][:].sum()) == 2
    events = []
    embed(slide, vit_encoder, path, batch_size=4, max_tiles=24, progress=events.append)
    assert events[-1].done == events[-1].total == 24
    assert events[-1].info["new_tiles"] == 8


def test_run_adapters_are_in_the_signature(tmp_path, slide, vit_encoder):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "adapter.safetensors").write_bytes(b"adapter-v1")
    (run_dir / "lora_spec.json").write_text("{}")

    class Run:  # what embed needs of a loaded SealRun
        path = run_dir
        encoder = vit_encoder

    path = tmp_path / "r.zarr"
    embed(slide, Run(), path, max_tiles=3)
    sig = zarr.open_group(path, mode="r").attrs["signature"]
    assert sig["encoder"]["source"] == f"run:{run_dir.resolve()}"
    assert sig["encoder"]["adapter_sha256"]
    (run_dir / "adapter.safetensors").write_bytes(b"adapter-v2")
    with pytest.raises(CacheMismatchError, match=r"encoder\.adapter_sha256"):
        embed(slide, Run(), path, max_tiles=3)


def test_auto_read_workers_leaves_the_cpu_to_the_model():
    from napari_seal.embedding.run import auto_read_workers

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    # the model's threads take every core: one reader, never none
    assert auto_read_workers("cpu", cores) == 1
    assert auto_read_workers("cpu", cores + 8) == 1
    assert auto_read_workers("cpu", 1) == max(1, min(4, cores - 1))
    # beside a GPU the host only reads: more readers, within bounds
    assert 2 <= auto_read_workers("cuda", 1) <= 8
    assert auto_read_workers("cuda", 1) == max(2, min(8, cores - 1))


def test_zero_readers_is_refused_before_anything_is_written(
    tmp_path, slide, vit_encoder
):
    with pytest.raises(BadInputError, match="read_workers must be at least 1"):
        embed(slide, vit_encoder, tmp_path / "s.zarr", max_tiles=2, read_workers=0)
    assert not (tmp_path / "s.zarr").exists()
