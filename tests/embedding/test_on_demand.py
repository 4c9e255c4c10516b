"""Embedding what is on screen first: order, write-through, bitwise equality, resume."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from test_embed_helpers import array_slide, make_vit, synthetic_he

from napari_seal.embedding.on_demand import OnDemandEmbedder
from napari_seal.embedding.run import embed


@pytest.fixture(scope="module")
def vit_encoder():
    return make_vit()


@pytest.fixture(scope="module")
def slide():
    return array_slide(synthetic_he(1600, 2400))


def _centre_um(engine, pos):
    return engine.grid.centres_xy[pos] * engine.grid.slide_mpp


def test_view_first_nearest_centre_and_bitwise_equal_to_batch_embed(
    tmp_path, slide, vit_encoder
):
    store = tmp_path / "live.zarr"
    engine = OnDemandEmbedder(slide, vit_encoder, store, batch_size=3, margin=0.0)
    n = len(engine.grid.tile_ids)
    # a view of a few tiles in the middle of the tissue
    cx, cy = 1200 * 0.5, 800 * 0.5
    engine.set_view(cx - 150, cy - 120, cx + 150, cy + 120)
    visible = engine.visible_tiles()
    assert 3 < visible.size < n // 2
    first = engine.step()
    assert first.computed
    assert first.index.size == 3
    assert set(first.index) <= set(visible)
    # the first batch is the tiles nearest the view centre
    d_all = np.hypot(*(_centre_um(engine, visible) - (cx, cy)).T)
    d_first = np.hypot(*(_centre_um(engine, first.index) - (cx, cy)).T)
    assert d_first.max() <= np.sort(d_all)[2] + 1e-9
    events = [first, *engine.iter_run(until_view_complete=True)]
    assert events[-1].view_complete
    assert engine.tiles_computed == visible.size  # margin 0: nothing else
    # written through: flags per tile, values in the store
    g = zarr.open_group(store, mode="r")
    flags = np.asarray(g["tile_done"][:])
    assert set(np.flatnonzero(flags)) == set(visible)
    live = np.asarray(g["embeddings"][:])
    # a batch embed of the whole slide (other batch size) gives the same bits
    ref = tmp_path / "batch.zarr"
    embed(slide, vit_encoder, ref, batch_size=8)
    batch = np.asarray(zarr.open_group(ref, mode="r")["embeddings"][:])
    np.testing.assert_array_equal(live[visible], batch[visible])
    assert np.isnan(live[np.setdiff1d(np.arange(n), visible)]).all()
    # the delivered embeddings are the stored ones
    for ev in events:
        np.testing.assert_array_equal(ev.embeddings, batch[ev.index])


def test_batch_embed_resumes_a_partial_store_and_reuses_tiles(
    tmp_path, slide, vit_encoder, monkeypatch
):
    import napari_seal.embedding.run as run_mod

    store = tmp_path / "live.zarr"
    engine = OnDemandEmbedder(slide, vit_encoder, store, batch_size=4, margin=0.0)
    engine.set_view(300, 200, 700, 500)
    for _ in engine.iter_run(until_view_complete=True):
        pass
    visible = engine.visible_tiles()
    n = len(engine.grid.tile_ids)
    encoded = []
    real = run_mod._encode_fn

    def counting(*args, **kwargs):
        f = real(*args, **kwargs)

        def g(tiles):
            encoded.append(len(tiles))
            return f(tiles)

        return g

    monkeypatch.setattr(run_mod, "_encode_fn", counting)
    embed(slide, vit_encoder, store, batch_size=8)
    assert sum(encoded) == n - visible.size  # the live tiles were not recomputed
    g = zarr.open_group(store, mode="r")
    assert bool(np.all(g["done"][:]))
    ref = tmp_path / "batch.zarr"
    monkeypatch.setattr(run_mod, "_encode_fn", real)
    embed(slide, vit_encoder, ref, batch_size=8)
    np.testing.assert_array_equal(
        g["embeddings"][:], zarr.open_group(ref, mode="r")["embeddings"][:]
    )
    # predict's reader sees every tile done
    from napari_seal.predict.expression import open_store

    assert open_store(store).tile_done.all()


def test_pan_reprioritises_keeps_finished_tiles_and_reads_back(
    tmp_path, slide, vit_encoder
):
    store = tmp_path / "live.zarr"
    engine = OnDemandEmbedder(slide, vit_encoder, store, batch_size=2, margin=0.0)
    engine.set_view(250, 250, 450, 450)
    a = engine.step()
    engine.set_view(750, 250, 950, 450)  # pan right
    b = engine.step()
    assert set(b.index) <= set(engine.visible_tiles())
    assert not set(a.index) & set(b.index)
    assert engine.known[a.index].all()  # finished tiles stay known
    engine.cancel()
    assert list(engine.iter_run()) == []
    # a new engine on the same store reads finished tiles back, no model
    again = OnDemandEmbedder(slide, vit_encoder, store, batch_size=2, margin=0.0)
    again.set_view(750, 250, 950, 450)
    ev = again.step()
    assert not ev.computed
    assert set(b.index) <= set(ev.index)
    assert again.tiles_computed == 0


def test_zoomed_out_previews_one_tile_per_block_first(tmp_path, slide, vit_encoder):
    engine = OnDemandEmbedder(
        slide, vit_encoder, tmp_path / "s.zarr", batch_size=4, preview_tiles=6
    )
    engine.set_view(0, 0, 1200, 800)  # the whole slide
    visible = engine.visible_tiles()
    assert visible.size > 12
    first = engine.step()
    k = int(first.block_k[0])
    assert k >= 2
    assert (first.block_k == k).all()
    # the preview samples lie in distinct k x k blocks
    r, c = engine.rows[first.index] // k, engine.cols[first.index] // k
    assert len(set(zip(r.tolist(), c.tolist(), strict=True))) == first.index.size
    for _ in engine.iter_run(until_view_complete=True):
        pass
    assert engine.known[visible].all()


def test_live_overlay_paints_preview_blocks_then_exact_tiles(tmp_path, slide,
                                                              vit_encoder):
    from napari_seal.predict.heads import ExpressionHead
    from napari_seal.predict.live import LiveOverlay, iter_live_overlay

    engine = OnDemandEmbedder(
        slide, vit_encoder, tmp_path / "s.zarr", batch_size=4, preview_tiles=6
    )
    head = ExpressionHead(genes=["A", "B"], hidden_fn=lambda e: e[:, :2])
    overlay = LiveOverlay(engine.grid, head, "A")
    engine.set_view(0, 0, 1200, 800)
    visible = engine.visible_tiles()
    updates = list(iter_live_overlay(engine, overlay, until_view_complete=True))
    first, last = updates[0], updates[-1]
    assert first.preview
    assert not first.view_complete
    # a preview sample's block is painted with its value; the sample itself is exact
    covered = [u for u in updates if u.covered]
    assert covered
    assert covered[0].preview  # the view was covered before it was exact
    assert last.view_complete
    assert not last.preview
    g = zarr.open_group(tmp_path / "s.zarr", mode="r")
    emb = np.asarray(g["embeddings"][:])
    r, c = engine.rows[visible], engine.cols[visible]
    np.testing.assert_array_equal(last.image[r, c], emb[visible, 0])
    overlay.set_gene("B")  # a gene switch repaints from the kept hidden layer
    np.testing.assert_array_equal(overlay.image[r, c], emb[visible, 1])
    lo, hi = overlay.contrast_limits()
    assert lo < hi


def test_gene_switch_requested_from_another_thread_is_painted_by_the_worker(
    tmp_path, slide, vit_encoder
):
    import threading

    from napari_seal.errors import GeneQueryError
    from napari_seal.predict.heads import ExpressionHead
    from napari_seal.predict.live import LiveOverlay, iter_live_overlay

    engine = OnDemandEmbedder(slide, vit_encoder, tmp_path / "s.zarr", batch_size=8)
    head = ExpressionHead(genes=["A", "B"], hidden_fn=lambda e: e[:, :2])
    overlay = LiveOverlay(engine.grid, head, "A")
    engine.set_view(0, 0, 1200, 800)
    visible = engine.visible_tiles()
    steps = iter_live_overlay(engine, overlay)  # runs until cancelled (a viewer's)
    while True:
        update = next(steps)
        if update is not None and update.view_complete:
            break
    with pytest.raises(GeneQueryError):
        overlay.request_gene("NOPE")  # refused in the caller, nothing queued
    threading.Thread(target=overlay.request_gene, args=("B",)).start()
    switched = None
    for _ in range(200):  # the idle worker applies it within one step
        update = next(steps)
        if overlay.gene == "B" and update is not None:
            switched = update
            break
    engine.cancel()
    steps.close()
    assert switched is not None
    emb = np.asarray(zarr.open_group(tmp_path / "s.zarr", mode="r")["embeddings"][:])
    r, c = engine.rows[visible], engine.cols[visible]
    np.testing.assert_array_equal(switched.image[r, c], emb[visible, 1])
