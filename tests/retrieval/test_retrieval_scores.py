"""Gene -> image scoring: both routes against hand computations, stores, score maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_retrieval_helpers import GENES, hand_grid, toy_run, write_store

import napari_seal.retrieval as retrieval
from napari_seal.errors import EncoderMismatchError, GeneQueryError
from napari_seal.retrieval.gene_query import score_image
from napari_seal.retrieval.gene_signatures import parse_query
from napari_seal.retrieval.scoring import (
    check_store_run,
    omics_input,
    query_expression,
    score_embeddings,
    score_store,
)


def _hand_omics(run, genes_weights, level_sd=2.0):
    """The omics embedding of a profile, by hand: z -> log space -> encoder -> flows."""
    g = len(run.panel.genes)
    z = np.zeros(g, np.float32)
    for gene, w in genes_weights:
        z[list(run.panel.genes).index(gene)] = level_sd * w
    x = torch.from_numpy(np.maximum(run.panel.mean + z * run.panel.std, 0))[None]
    vae = run.omics
    with torch.no_grad():
        h = vae.encoder(x)  # eval mode: BatchNorm running statistics
        zq = vae.fc_mu(h)
        for flow in vae.flows:
            u = flow.u_hat()
            zq = zq + u * torch.tanh(zq @ flow.w + flow.b)[:, None]
    return zq[0].numpy()


def _cos(emb, q):
    return emb @ q / np.linalg.norm(emb, axis=1) / np.linalg.norm(q)


def test_query_vector_levels_and_others_at_mean():
    run = toy_run()
    q = parse_query("ERBB2:1,CD74:-0.5", panel=GENES)
    z = query_expression(run, q)
    assert z[GENES.index("ERBB2")] == 2.0
    assert z[GENES.index("CD74")] == -1.0
    assert np.count_nonzero(z) == 2
    # into the encoder's log space; a strongly negative weight stops at no expression
    x = omics_input(run, query_expression(run, parse_query("ERBB2:-9", panel=GENES)))
    i = GENES.index("ERBB2")
    assert x[i] == 0.0
    np.testing.assert_allclose(np.delete(x, i), np.delete(run.panel.mean, i))


def test_omics_route_equals_hand_computation():
    run = toy_run()
    emb = np.random.default_rng(1).normal(size=(40, 64)).astype(np.float32)
    q = parse_query("ERBB2:1,GRB7:0.5", panel=GENES)
    query = _hand_omics(run, [("ERBB2", 1.0), ("GRB7", 0.5)])
    mean = _hand_omics(run, [])  # every gene at its training mean
    # default: relative to the all-mean profile
    got = score_embeddings(run, emb, q, route="omics")
    np.testing.assert_allclose(got, _cos(emb, query - mean), rtol=1e-4, atol=1e-5)
    # --no-contrast: the raw omics embedding of the query profile
    raw = score_embeddings(run, emb, q, route="omics", contrast=False)
    np.testing.assert_allclose(raw, _cos(emb, query), rtol=1e-4, atol=1e-5)
    # a different query ranks the tiles differently (the query matters)
    other = score_embeddings(run, emb, parse_query("PTPRC", panel=GENES))
    assert not np.allclose(np.argsort(got), np.argsort(other))


def test_decoder_route_equals_hand_computation():
    run = toy_run()
    emb = np.random.default_rng(2).normal(size=(30, 64)).astype(np.float32)
    q = parse_query("KRT19:2,ACTA2:-1", panel=GENES)
    got = score_embeddings(run, emb, q, route="decoder")
    with torch.no_grad():
        pred = run.decoder(torch.from_numpy(emb)).numpy()
    i, j = GENES.index("KRT19"), GENES.index("ACTA2")
    zi = (pred[:, i] - run.panel.mean[i]) / run.panel.std[i]
    zj = (pred[:, j] - run.panel.mean[j]) / run.panel.std[j]
    np.testing.assert_allclose(got, (2 * zi - zj) / 3, rtol=1e-4, atol=1e-5)


def test_run_without_omics_or_decoder():
    emb = np.zeros((3, 64), np.float32)
    q = parse_query("ERBB2", panel=GENES)
    with pytest.raises(GeneQueryError, match="no omics encoder.*--route decoder"):
        score_embeddings(toy_run(omics=False), emb, q, route="omics")
    with pytest.raises(GeneQueryError, match="no image->gene decoder.*--route omics"):
        score_embeddings(toy_run(decoder=False), emb, q, route="decoder")
    with pytest.raises(GeneQueryError, match="not a query route"):
        score_embeddings(toy_run(), emb, q, route="pca")


@pytest.fixture
def store(tmp_path):
    keep = np.ones((7, 9), bool)
    keep[0, :3] = keep[6, 6:] = keep[3, 4] = False
    grid = hand_grid(keep=keep)
    emb = (
        np.random.default_rng(3)
        .normal(size=(len(grid.tile_ids), 64))
        .astype(np.float32)
    )
    write_store(tmp_path / "s.zarr", grid, emb)
    return tmp_path / "s.zarr", grid, emb


@pytest.mark.parametrize("route", ["omics", "decoder"])
def test_store_scores_match_embedding_scores(store, route):
    path, _, emb = store
    run = toy_run()
    q = parse_query("GRB7,MKI67", panel=GENES)
    got = score_store(path, run, q, route=route)
    want = score_embeddings(run, emb, q, route=route)
    np.testing.assert_allclose(got, want, atol=2e-3)  # float16 cache for omics
    assert np.corrcoef(got, want)[0, 1] > 0.9999


def test_score_image_geometry_matches_overlays(store):
    from napari_seal.predict.expression import expression_image, open_store

    path, grid, _ = store
    run = toy_run()
    q = parse_query("ERBB2", panel=GENES)
    scores = score_store(path, run, q)
    img, scale, translate = score_image(path, scores)
    _, o_scale, o_translate = expression_image(open_store(path), run, "ERBB2")
    assert scale == tuple(o_scale)
    assert translate == tuple(o_translate)
    assert img.shape == (7, 9)
    rc = grid.rows_cols()
    np.testing.assert_array_equal(img[rc[:, 0], rc[:, 1]], scores)
    assert np.isnan(img[0, 0])
    assert np.isnan(img[3, 4])
    assert np.isfinite(img).sum() == len(scores)


def test_store_from_another_encoder_is_refused(store, tmp_path):
    from napari_seal.predict.expression import open_store

    path, _, _ = store
    run = toy_run(path=tmp_path / "run")
    with pytest.raises(
        EncoderMismatchError, match="made with synthetic, not with the run"
    ):
        check_store_run(open_store(path), run)
    with pytest.raises(EncoderMismatchError, match="64 dimensions.*has 32"):
        score_store(path, toy_run(embed_dim=32), parse_query("ERBB2", panel=GENES))


def test_query_result_roundtrip_and_top_k(store, tmp_path):
    path, grid, _ = store
    run = toy_run()
    q = parse_query("ERBB2", panel=GENES)
    gen = retrieval.iter_query(
        None, run, q, store=path, out=tmp_path / "q.zarr", top_q=0.25
    )
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert events
    assert all(e.stage == "query" for e in events)
    back = retrieval.read_scores(tmp_path / "q.zarr")
    np.testing.assert_array_equal(back.scores, result.scores)
    np.testing.assert_array_equal(back.tile_ids, grid.tile_ids)
    np.testing.assert_array_equal(back.coords, grid.coords)
    assert back.query == result.query
    assert back.route == "omics"
    assert back.info["contour"]["n_tiles"] == int(np.ceil(0.25 * len(grid.tile_ids)))
    top = retrieval.top_k_tiles(back, 5)
    order = np.argsort(-back.scores, kind="stable")[:5]
    np.testing.assert_array_equal(top.tile_ids, grid.tile_ids[order])
    np.testing.assert_array_equal(top.coords, grid.coords[order])
    assert back.info["top_tiles"]["tile_ids"][:5] == top.tile_ids.tolist()
    # rewriting replaces the result; a foreign folder is refused
    retrieval.write_scores(back, tmp_path / "q.zarr")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    from napari_seal.errors import OutputPathError

    with pytest.raises(OutputPathError, match="not a query result"):
        retrieval.write_scores(back, tmp_path / "other")
