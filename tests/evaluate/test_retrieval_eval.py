"""Retrieval metrics: AUROC against sklearn, labels, Recall@k, the gene-query report."""

from __future__ import annotations

import numpy as np
import pytest
from retrieval.test_retrieval_helpers import GENES, toy_run, toy_sample
from sklearn.metrics import roc_auc_score

import napari_seal.evaluate.retrieval_metrics as ev


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    assert ev.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    cont = rng.normal(size=200) + labels
    assert ev.auroc(cont, labels) == pytest.approx(roc_auc_score(labels, cont))


def test_auroc_edge_cases():
    assert ev.auroc([1.0, 2.0, 3.0], [0, 1, 1]) == 1.0
    assert ev.auroc([3.0, 2.0, 1.0], [0, 1, 1]) == 0.0
    assert np.isnan(ev.auroc([1.0, 2.0], [1, 1]))
    assert ev.auroc([np.nan, 1.0, 2.0, 0.5], [1, 0, 1, 0]) == 1.0  # NaN dropped


def test_top_quartile_labels_strict():
    x = np.array([[0.0, 1], [0, 2], [0, 3], [0, 4], [5, 5]])
    lab = ev.top_quartile_labels(x)
    assert lab[:, 0].tolist() == [False] * 4 + [True]  # zeros never positive
    assert lab[:, 1].tolist() == [False, False, False, False, True]


def test_recall_at_k():
    sim = np.array(
        [
            [0.9, 0.1, 0.0],
            [0.8, 0.7, 0.1],  # true (0.7) ranks 2nd
            [0.5, 0.5, 0.5],
        ]
    )  # tie counts against the query -> rank 3
    r = ev.recall_at_k(sim, ks=(1, 2, 3))
    assert r["R@1"] == pytest.approx(1 / 3)
    assert r["R@2"] == pytest.approx(2 / 3)
    assert r["R@3"] == 1.0
    assert r["chance@1"] == pytest.approx(1 / 3)
    r = ev.recall_at_k(sim, ks=(1,), true_index=np.array([0, 0, 0]))
    assert r["R@1"] == pytest.approx(2 / 3)


def test_correlation_matrix():
    a = np.random.default_rng(0).normal(size=(4, 10))
    b = np.random.default_rng(1).normal(size=(3, 10))
    want = np.corrcoef(np.vstack([a, b]))[:4, 4:]
    np.testing.assert_allclose(ev.correlation_matrix(a, b), want, atol=1e-12)


def test_gene_query_report_on_a_sample():
    sample = toy_sample(n_side=8, seed=2)
    run = toy_run()
    emb = np.random.default_rng(0).normal(size=(sample.n_spots, 64)).astype(np.float32)
    names, expr, depth = ev.measured_log1p_cp10k(sample)
    dense = expr.toarray()
    oracle = (dense, names)  # a "baseline" that predicts the measured values
    noise = (np.random.default_rng(1).normal(size=dense.shape), names)
    rep = ev.evaluate_gene_queries(
        run,
        sample,
        embeddings=emb,
        n_genes=5,
        baselines={"oracle": oracle, "noise": noise},
    )
    genes = rep["genes"]
    var = dense.var(axis=0)
    top5 = [names[i] for i in np.argsort(-var)[:5]]
    assert genes[:5] == top5
    assert set(genes[5:]) <= set(ev.MARKERS)  # markers of the panel appended
    m = rep["methods"]
    assert m["oracle"]["mean"] == 1.0  # labels are a threshold of the same values
    assert abs(m["noise"]["mean"] - 0.5) < 0.15
    assert set(m) == {"omics", "decoder", "oracle", "noise", "depth"}
    assert set(m["omics"]["markers"]) == {"ERBB2", "GRB7", "KRT19", "CD74"}
    g0 = genes[0]
    lab = ev.top_quartile_labels(dense[:, [names.index(g0)]])[:, 0]
    assert rep["positives"][g0] == int(lab.sum())
    assert m["depth"]["per_gene"][g0] == pytest.approx(roc_auc_score(lab, depth))
    s = ev.gene_score_matrix(run, emb, genes, route="omics")
    assert m["omics"]["per_gene"][g0] == pytest.approx(roc_auc_score(lab, s[:, 0]))


def test_gene_score_matrix_equals_single_queries():
    from napari_seal.retrieval.gene_signatures import parse_query
    from napari_seal.retrieval.scoring import score_embeddings

    run = toy_run()
    emb = np.random.default_rng(4).normal(size=(20, 64)).astype(np.float32)
    genes = ["ERBB2", "VIM", "CD74"]
    for route in ("omics", "decoder"):
        mat = ev.gene_score_matrix(run, emb, genes, route=route)
        for j, g in enumerate(genes):
            one = score_embeddings(run, emb, parse_query(g, panel=GENES), route=route)
            np.testing.assert_allclose(mat[:, j], one, rtol=1e-4, atol=1e-5)


def test_image_to_expression_recall():
    sample = toy_sample(n_side=6, seed=3)
    run = toy_run()
    emb = np.random.default_rng(0).normal(size=(sample.n_spots, 64)).astype(np.float32)
    measured = np.asarray(run.panel.expression(sample))
    rep = ev.evaluate_image_to_expression(
        run,
        sample,
        embeddings=emb,
        ks=(1, 5),
        baselines={"perfect": (measured, list(run.panel.genes))},
    )
    assert rep["perfect"]["R@1"] == 1.0
    assert 0.0 <= rep["omics"]["R@5"] <= 1.0
    assert "R@1" in rep["decoder"]
    assert rep["omics"]["chance@5"] == pytest.approx(5 / sample.n_spots)
