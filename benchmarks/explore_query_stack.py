"""How far do the small gene-query gains stack? her2st leave one section out (issue 15).

Each of these was measured alone at +0.002 to +0.006 mean AUROC and not adopted (see
``docs/queries.md``): exemplars weighted by how far above the mean score
(``explore_exemplar_top.py``), the mean of the two routes' standardised scores
(``explore_route_ensemble.py``), smoothing the score over neighbouring spots
(``explore_query_smoothing.py``). This adds test-time augmentation (``tta``: the spot
patch's embedding averaged over the 8 rotations and mirrorings, 8 x the encoder's
work) and scores every combination on the SEAL runs of a
``bench_gene_query_her2st.py`` workdir: the mean AUROC over the 50 most variable
panel genes per fold, plus ERBB2 and GRB7 (that benchmark's protocol and labels). The
augmented embeddings are cached in the workdir's ``features/`` (about 10 s per fold
on 2 cores the first time, for her2st's ~180 spots per section). Everything here is
chosen on all five folds at once, so the stack's gain carries selection optimism: read
it as an upper bound.
``--reliability`` also prints the reliability map's AUROC (``spread``,
``expected-error``; ``bench_gene_query_her2st.py``'s protocol) with and without the
augmentation.

Usage::

    python benchmarks/explore_query_stack.py --workdir /tmp/gq-WORKDIR [--json OUT] \
        [--sigma 100] [--reliability]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

SECTIONS = ("C2", "C3", "C4", "C5", "C6")


def dihedral_embeddings(run, sample, cache: Path) -> np.ndarray:
    """``(8, n_spots, D)`` embeddings of each spot patch under the 8 dihedral maps."""
    from napari_seal.models.inference import encode_images
    from napari_seal.tiling.grid import spot_patches

    enc = run.encoder
    f = cache / f"dihedral-{Path(run.path).name}-{sample.name}-{sample.n_spots}.npy"
    if f.is_file():
        return np.load(f)
    patches = spot_patches(sample, size_px=int(enc.tile_px), mpp=float(enc.mpp))
    out = []
    for mirror in (False, True):
        base = patches[:, :, ::-1] if mirror else patches
        for k in range(4):
            views = np.ascontiguousarray(np.rot90(base, k, axes=(1, 2)))
            out.append(np.asarray(encode_images(enc, views, batch_size=64), np.float32))
    emb = np.stack(out)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(f, emb)
    return emb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--sigma", type=float, default=100.0, help="smoothing, um")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--reliability", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from explore_exemplar_top import _unit, query_vectors
    from explore_query_smoothing import smoothing_matrix
    from explore_route_ensemble import _standardise, fold_row, held_out_folds, report

    import napari_seal.evaluate.retrieval_metrics as ev

    sm = f" + smoothed {args.sigma:g} um"
    methods: list[str] = []
    rows: dict[str, dict] = {}
    rel: dict[str, list[float]] = {}
    for fold in held_out_folds(args.workdir):
        held, run, sample = fold.held, fold.run, fold.sample
        genes = list(run.panel.genes)
        views = dihedral_embeddings(run, sample, args.workdir / "features")
        wplus = _unit(query_vectors(run, genes, [])["weighted+"])
        xy_um = np.asarray(sample.spots_xy, dtype=np.float64) * float(sample.mpp)
        smooth = smoothing_matrix(xy_um, args.sigma)
        scores: dict[str, np.ndarray] = {}
        for tag, emb in (("", views[0]), (" + tta", views.mean(axis=0))):
            ex = ev.gene_score_matrix(run, emb, genes, route="omics",
                                      omics_query="exemplar")
            dec = ev.gene_score_matrix(run, emb, genes, route="decoder")
            wp = _unit(emb) @ wplus.T
            ens = (_standardise(wp) + _standardise(dec)) / 2
            scores[f"exemplar{tag}"] = ex
            scores[f"decoder{tag}"] = dec
            scores[f"weighted+{tag}"] = wp
            scores[f"weighted+ & decoder{tag}"] = ens
            scores[f"exemplar{tag}{sm}"] = smooth @ ex
            scores[f"weighted+ & decoder{tag}{sm}"] = smooth @ ens
        methods = list(scores)
        rep = ev.evaluate_gene_queries(
            run, sample, embeddings=views[0], routes=(),
            baselines={m: (np.asarray(s, dtype=np.float64), genes)
                       for m, s in scores.items()},
        )
        rows[held] = fold_row(held, rep, methods)
        if args.reliability:
            from napari_seal.evaluate.reliability_metrics import evaluate_reliability

            for tag, emb in (("", views[0]), (" + tta", views.mean(axis=0))):
                got = evaluate_reliability(run, sample, embeddings=emb)["methods"]
                for m in ("spread", "expected-error"):
                    rel.setdefault(m + tag, []).append(got[m]["mean"])
    for m, per in rel.items():
        print(f"reliability {m}: " + " / ".join(f"{v:.3f}" for v in per)
              + f", mean {np.mean(per):.3f}")
    return report(rows, methods, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
