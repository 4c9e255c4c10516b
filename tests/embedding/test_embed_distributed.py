"""``embed --scheduler``: the same chunk tasks on a dask.distributed cluster."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zarr
from test_embed_helpers import array_slide, make_vit

from napari_seal.embedding.run import embed, iter_embed
from napari_seal.errors import SchedulerError

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def vit_encoder():
    return make_vit()


@pytest.fixture(scope="module")
def slide():
    return array_slide()


def test_distributed_store_equals_local(tmp_path, slide, vit_encoder):
    local = tmp_path / "local.zarr"
    remote = tmp_path / "remote.zarr"
    # fp32: compared at fp32 tolerances (workers run 1 thread, the client 2); the
    # client's precision travels to the workers with each task
    embed(slide, vit_encoder, local, batch_size=4, chunk_tiles=8, precision="fp32")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        events = []
        embed(
            slide,
            vit_encoder,
            remote,
            batch_size=4,
            chunk_tiles=8,
            scheduler=cluster.scheduler_address,
            precision="fp32",
            progress=events.append,
        )
        # both workers took part
        with distributed.Client(cluster) as client:
            n_workers = len(client.scheduler_info()["workers"])
    assert n_workers == 2
    assert events[-1].done == events[-1].total
    a, b = zarr.open_group(local, mode="r"), zarr.open_group(remote, mode="r")
    np.testing.assert_array_equal(a["tile_ids"][:], b["tile_ids"][:])
    np.testing.assert_array_equal(a["coords"][:], b["coords"][:])
    assert bool(np.all(b["done"][:]))
    np.testing.assert_allclose(
        b["embeddings"][:], a["embeddings"][:], rtol=1e-4, atol=1e-5
    )
    assert dict(a.attrs)["signature"] == dict(b.attrs)["signature"]


def test_bad_scheduler_address_fails_fast_and_keeps_chunks(
    tmp_path, slide, vit_encoder
):
    path = tmp_path / "s.zarr"
    gen = iter_embed(slide, vit_encoder, path, batch_size=4, chunk_tiles=8)
    for event in gen:
        if event.info.get("chunks_done", 0) >= 1:
            break
    gen.close()
    before = zarr.open_group(path, mode="r")["done"][:].copy()
    t0 = time.monotonic()
    with pytest.raises(SchedulerError, match="did not answer") as err:
        embed(
            slide,
            vit_encoder,
            path,
            scheduler="tcp://127.0.0.1:9",
            scheduler_timeout_s=2,
        )
    assert time.monotonic() - t0 < 30
    assert "--scheduler" in str(err.value)
    after = zarr.open_group(path, mode="r")["done"][:]
    np.testing.assert_array_equal(after, before)
    assert after.sum() >= 1
