"""Expression heads, lazy per-gene overlays and spot-level comparison."""

from __future__ import annotations

import numpy as np
import pytest
from embedding.test_embed_helpers import array_slide, synthetic_store

from napari_seal.errors import BadInputError, GeneQueryError
from napari_seal.predict.expression import (
    expression_head,
    expression_image,
    open_store,
    predict_tiles,
    tile_predictions,
)
from napari_seal.predict.heads import ExpressionHead, head_from_linear, head_from_module
from napari_seal.predict.spots import compare_at_spots, spot_predictions


def _decoder(embed_dim: int, genes: list[str], seed: int = 0):
    import torch

    from napari_seal.models.decoder import ImgEmbDecoder

    torch.manual_seed(seed)
    return ImgEmbDecoder(embed_dim, len(genes), hidden=32)


def _probe(embed_dim: int, n_genes: int, seed: int = 0):
    from napari_seal.predict.probe import RidgeProbe

    rng = np.random.default_rng(seed)
    n_pc = min(6, embed_dim)
    genes = [f"G{i}" for i in range(n_genes)]
    return RidgeProbe(
        scaler_mean=rng.normal(size=embed_dim),
        scaler_scale=rng.uniform(0.5, 2, embed_dim),
        pca_mean=rng.normal(size=embed_dim) * 0.1,
        pca_components=np.linalg.qr(rng.normal(size=(embed_dim, n_pc)))[0].T,
        coef=rng.normal(size=(n_genes, n_pc)),
        offset=rng.normal(size=n_genes),
        alpha=1.0,
        meta={"genes": genes, "encoder": "synthetic"},
    )


class _Run:  # the parts of a SealRun a head needs
    def __init__(self, decoder, genes):
        self.decoder = decoder
        self.panel = type("Panel", (), {"genes": genes})()


def test_decoder_head_is_exact_split():
    import torch

    genes = [f"G{i}" for i in range(7)]
    dec = _decoder(8, genes)
    head = head_from_module(dec, genes)
    assert head.activation == "relu"
    assert head.weight.shape == (32, 7)
    e = np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32)
    with torch.no_grad():
        want = dec(torch.from_numpy(e)).numpy()
    np.testing.assert_allclose(head.predict(e), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        head.predict(e, ["G3", "g1"]), want[:, [3, 1]], rtol=1e-5, atol=1e-5
    )
    with pytest.raises(GeneQueryError, match="G1"):
        head.index(["G1x"])


@pytest.mark.parametrize("n_genes", [5, 300])
def test_ridge_head_matches_apply_head(n_genes):
    from napari_seal.evaluate.benchmark import apply_head

    probe = _probe(24, n_genes)
    head = expression_head(probe)
    e = np.random.default_rng(2).normal(size=(40, 24)).astype(np.float32)
    np.testing.assert_allclose(
        head.predict(e), apply_head(probe, e), rtol=1e-3, atol=1e-3
    )


def test_non_linear_callable_is_refused():
    with pytest.raises(BadInputError, match="not linear"):
        head_from_linear(lambda e: np.tanh(e[:, :2] * 5), ["a", "b"], embed_dim=4)


@pytest.fixture
def store_and_emb(tmp_path):
    grid, emb = synthetic_store(tmp_path / "s.zarr")
    return open_store(tmp_path / "s.zarr"), grid, emb


def test_expression_image_geometry(tmp_path):
    """A tile with a known high value lands at that tile's place in world um."""
    slide = array_slide(mpp=0.5)
    hot = {}

    def emb_fn(grid):
        e = np.zeros((len(grid.tile_ids), 4), np.float32)
        k = len(grid.tile_ids) // 3
        hot["k"] = k
        e[k, 0] = 10.0
        e[:, 1] = np.arange(len(e))
        return e

    grid, _ = synthetic_store(tmp_path / "g.zarr", embeddings_fn=emb_fn, slide=slide)
    store = open_store(tmp_path / "g.zarr")
    head = head_from_linear(lambda e: e[:, :2].copy(), ["HOT", "IDX"], embed_dim=4)
    image, scale, translate = expression_image(store, head, "HOT")
    img = image.compute()
    assert img.shape == (grid.n_rows, grid.n_cols)
    assert img.dtype == np.float32
    r, c = np.unravel_index(np.nanargmax(img), img.shape)
    k = hot["k"]
    assert grid.tile_ids[k] == r * grid.n_cols + c
    # napari: world = translate + index * scale (pixel centre); expect the tile centre
    world_rc = np.array(translate) + np.array([r, c]) * np.array(scale)
    centre_xy = (grid.coords[k] + grid.tile_size_l0 / 2.0) * slide.mpp
    np.testing.assert_allclose(world_rc, centre_xy[::-1], atol=0.5 * slide.mpp)
    assert scale == pytest.approx((grid.stride_l0 * slide.mpp,) * 2)
    # NaN exactly off tissue
    on = np.zeros(grid.n_rows * grid.n_cols, bool)
    on[grid.tile_ids] = True
    assert np.array_equal(np.isfinite(img).ravel(), on)
    # every tile at its own pixel
    idx_img = expression_image(store, head, "IDX")[0].compute().ravel()
    np.testing.assert_array_equal(idx_img[grid.tile_ids], np.arange(len(grid.tile_ids)))


def test_gene_switch_does_not_recompute_embeddings(store_and_emb):
    store, grid, emb = store_and_emb
    genes = [f"G{i}" for i in range(6)]
    dec = _decoder(emb.shape[1], genes)
    head = expression_head(_Run(dec, genes))
    img0 = expression_image(store, head, "G0")[0].compute()
    reads = store.stats["embedding_reads"]
    assert reads >= 1
    assert store.stats["hidden_computed"] == 1
    imgs = [expression_image(store, head, g)[0].compute() for g in genes[1:]]
    assert store.stats["embedding_reads"] == reads  # cached hidden layer reused
    assert store.stats["hidden_computed"] == 1
    want = head.predict(emb)
    for j, img in enumerate([img0, *imgs]):
        np.testing.assert_allclose(
            img.ravel()[grid.tile_ids], want[:, j], rtol=1e-5, atol=1e-6
        )


def test_predict_tiles_is_lazy_and_correct(store_and_emb):
    import dask.array as da

    store, _, emb = store_and_emb
    probe = _probe(emb.shape[1], 4)
    lazy = predict_tiles(store, probe, genes=["G2", "G0"])
    assert isinstance(lazy, da.Array)
    assert lazy.shape == (len(emb), 2)
    from napari_seal.evaluate.benchmark import apply_head

    np.testing.assert_allclose(
        lazy.compute(), apply_head(probe, emb)[:, [2, 0]], rtol=1e-3, atol=1e-3
    )


def test_tile_predictions_anndata(store_and_emb):
    store, grid, emb = store_and_emb
    probe = _probe(emb.shape[1], 3)
    ad = tile_predictions(store, probe)
    assert list(ad.var_names) == ["G0", "G1", "G2"]
    np.testing.assert_array_equal(ad.obs["tile_id"].to_numpy(), grid.tile_ids)
    np.testing.assert_allclose(ad.obsm["spatial"], grid.coords + grid.tile_size_l0 / 2)


def test_open_store_rejects_other_folders(tmp_path):
    with pytest.raises(BadInputError, match="napari-seal embed"):
        open_store(tmp_path)


def _sample(slide, xy, counts, genes):
    import anndata as ad
    import pandas as pd

    from napari_seal.io.sample import SpatialSample

    adata = ad.AnnData(
        X=np.asarray(counts, np.float32),
        obs=pd.DataFrame(index=[f"s{i}" for i in range(len(xy))]),
        var=pd.DataFrame(index=genes),
    )
    adata.obsm["spatial"] = np.asarray(xy, np.float64)
    return SpatialSample(
        slide=slide, adata=adata, mpp=slide.mpp, spot_diameter_um=55.0, name="synthetic"
    )


def test_spot_predictions_from_store_and_pearson(tmp_path):
    slide = array_slide(mpp=0.5)
    grid, emb = synthetic_store(tmp_path / "p.zarr", slide=slide)
    store = open_store(tmp_path / "p.zarr")
    head = head_from_linear(
        lambda e: e[:, :2] * 1.0, ["A", "B"], embed_dim=emb.shape[1]
    )
    centres = grid.coords + grid.tile_size_l0 / 2.0
    picks = np.arange(0, len(grid.tile_ids), 3)
    off_tissue = np.array([[2.0, 2.0]])  # a corner with no tissue tile
    xy = np.vstack([centres[picks] + 3.0, off_tissue])
    rng = np.random.default_rng(0)
    total = rng.integers(500, 2000, len(xy))
    a_true = np.r_[emb[picks, 0], 0.0]
    counts = np.column_stack(
        [np.round(np.expm1(a_true - a_true.min()) * total / 1e4 * 50), total]
    )
    sample = _sample(slide, xy, counts, ["A", "OTHER"])
    pred = spot_predictions(sample, store, head)
    assert list(pred.obs_names) == list(sample.adata.obs_names)
    np.testing.assert_allclose(pred.X[:-1, 0], emb[picks, 0], rtol=1e-6)
    assert np.isnan(pred.X[-1]).all()
    r = compare_at_spots(sample, pred, "A")
    measured = np.log1p(counts[:, 0] / counts.sum(1) * 1e4)[:-1]
    assert r == pytest.approx(np.corrcoef(measured, emb[picks, 0])[0, 1], abs=1e-9)
    assert r > 0.5
    with pytest.raises(GeneQueryError, match="not measured"):
        compare_at_spots(sample, pred, "B")


def test_head_object_is_passed_through():
    head = ExpressionHead(["x"], lambda e: e[:, :1])
    assert expression_head(head) is head
    with pytest.raises(BadInputError, match="expression head"):
        expression_head(object())


def test_live_overlay_fills_in_tiles_finished_later(tmp_path):
    """An overlay opened mid-embedding: NaN for unfinished chunks, filled in later."""
    from napari_seal.embedding.store import open_or_create_store
    from napari_seal.tiling.grid import TilingConfig, make_tile_grid

    slide = array_slide(mpp=0.5)
    grid = make_tile_grid(slide, config=TilingConfig(tile_px=64, mpp=1.0))
    n = len(grid.tile_ids)
    emb = np.random.default_rng(3).normal(size=(n, 4)).astype(np.float32)
    kw = {
        "signature": {"format": "napari-seal.embeddings/1"},
        "grid": grid,
        "embed_dim": 4,
        "chunk_tiles": 8,
        "dtype": "float32",
        "precision": "fp32",
    }
    writer = open_or_create_store(tmp_path / "live.zarr", **kw)
    writer.write_chunk(0, emb[:8])
    store = open_store(tmp_path / "live.zarr")
    head = head_from_linear(lambda e: e[:, :1] * 2.0, ["A"], embed_dim=4)
    first = expression_image(store, head, "A")[0].compute().ravel()[grid.tile_ids]
    np.testing.assert_allclose(first[:8], 2 * emb[:8, 0], rtol=1e-6)
    assert np.isnan(first[8:]).all()
    writer = open_or_create_store(tmp_path / "live.zarr", **kw)  # resume
    for chunk in writer.todo_chunks():
        c0, c1 = writer.chunk_range(chunk)
        writer.write_chunk(chunk, emb[c0:c1])
    later = expression_image(store, head, "A")[0].compute().ravel()[grid.tile_ids]
    np.testing.assert_allclose(later, 2 * emb[:, 0], rtol=1e-6)
    assert store.stats["hidden_computed"] == 1  # filled in, not recomputed


def test_run_folder_head_reads_only_the_decoder(tmp_path):
    """A run folder's head comes from panel.json + heads.safetensors (no encoder)."""
    import json
    import time

    import torch
    from safetensors.torch import save_file

    genes = [f"G{i}" for i in range(5)]
    dec = _decoder(8, genes, seed=3)
    run = tmp_path / "run"
    run.mkdir()
    tensors = {f"decoder.{k}": v for k, v in dec.state_dict().items()}
    tensors["omics.layer.weight"] = torch.zeros(2, 2)
    save_file(tensors, run / "heads.safetensors")
    (run / "panel.json").write_text(json.dumps({"genes": genes, "mean": [0] * 5}))
    (run / "DONE").write_text("{}")
    t0 = time.perf_counter()
    head = expression_head(run)
    assert time.perf_counter() - t0 < 1.0
    assert head.genes == genes
    e = np.random.default_rng(4).normal(size=(30, 8)).astype(np.float32)
    with torch.no_grad():
        want = dec(torch.from_numpy(e)).numpy()
    np.testing.assert_allclose(head.predict(e), want, rtol=1e-5, atol=1e-5)
