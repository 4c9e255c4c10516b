"""The live overlay's reliability map: the same values as the batch map of the store,
following gene switches, and hiding exactly the tiles above the threshold."""

from __future__ import annotations

import numpy as np


def _run_view(run, tmp_path, *, reference):
    from napari_seal.embedding.on_demand import OnDemandEmbedder
    from napari_seal.io.hest import bundled_sample_path, load_sample
    from napari_seal.predict.expression import expression_head
    from napari_seal.predict.live import LiveOverlay, iter_live_overlay

    sample = load_sample(bundled_sample_path())
    engine = OnDemandEmbedder(sample.slide, run, tmp_path / "live.zarr", batch_size=16)
    gene = run.panel.genes[0]
    overlay = LiveOverlay(engine.grid, expression_head(run), gene, reference=reference)
    xy = engine.grid.centres_xy * engine.grid.slide_mpp  # tile centres, um
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    engine.set_view(x0, y0, (x0 + x1) / 2, (y0 + y1) / 2)  # a quarter of the tissue
    updates = list(iter_live_overlay(engine, overlay, until_view_complete=True))
    return engine, overlay, updates


def test_live_map_equals_the_batch_map_and_hides_above_the_threshold(tiny_run,
                                                                       tmp_path):
    from napari_seal.predict.expression import open_store
    from napari_seal.predict.reliability import tile_uncertainty
    from napari_seal.training.runs import load_run

    run = load_run(tiny_run)
    engine, overlay, updates = _run_view(run, tmp_path, reference=run)
    last = updates[-1]
    assert last.view_complete
    assert last.uncertainty is not None
    done = np.flatnonzero(overlay.exact)
    assert done.size >= last.view_total > 0
    r, c = overlay.rows[done], overlay.cols[done]
    store = open_store(engine.store_path)
    genes = list(run.panel.genes[:2])
    batch = tile_uncertainty(store, run, genes)  # the map `predict`/`query` export
    np.testing.assert_allclose(last.uncertainty[r, c], batch[done, 0],
                               rtol=1e-5, atol=1e-6)
    assert np.isnan(last.uncertainty[~overlay._tissue]).all()

    # hide above the median: exactly the painted tiles above it are blanked
    thr = float(np.median(batch[done, 0]))
    shown, hidden = last.shown(thr)
    above = last.uncertainty > thr
    assert hidden == int((above & np.isfinite(last.image)).sum()) > 0
    assert np.isnan(shown[above]).all()
    keep = ~above & np.isfinite(last.image)
    np.testing.assert_array_equal(shown[keep], last.image[keep])
    assert last.shown(None) == (last.image, 0)
    assert last.shown(1e9)[1] == 0

    # a gene switch: the map follows, from the kept neighbours (no store read)
    overlay.set_gene(genes[1])
    np.testing.assert_allclose(overlay.uncertainty[r, c], batch[done, 1], rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(overlay.uncertainty[r, c], batch[done, 0])


def test_live_overlay_without_a_reference_has_no_map(tiny_run, tmp_path):
    from napari_seal.training.runs import load_run

    _, overlay, updates = _run_view(load_run(tiny_run), tmp_path, reference=None)
    assert overlay.reliability_gene is None
    assert all(u.uncertainty is None for u in updates)
    assert updates[-1].shown(0.1) == (updates[-1].image, 0)
