"""More reliability estimates on the LOSO folds (issue 15): neighbour counts, weighting,
learned error models, and the ceiling of the label.

For every held-out section whose SEAL run ``bench_gene_query_her2st.py`` left in
``--workdir``, the AUROC (per gene, averaged over the held-out section's 50 most
variable panel genes plus markers) for "the decoder's error at the spot is above the
gene's median" (the protocol of ``napari_seal.evaluate.reliability_metrics``) of:

- spread / expected error over k = 32..256 omics neighbours (the reliability map's
  neighbours), and with softmax similarity weights (temperature 0.01-0.1);
- expected error over neighbours among the training spots' *image* embeddings;
- learned error models fitted on the training sections only: a ridge from the image
  embedding to each training spot's cross-validated ``|residual|`` (a ridge predictor
  fitted leaving that spot's training section out), the neighbours' mean
  cross-validated ``|residual|``, and a ridge from the embedding to ``|measured z|``;
- context the map does not use: the spot's depth foreseen from the image (a ridge to
  the training spots' log1p total counts; the true depth as its oracle), the held-out
  tile's spatial neighbours (SD of their predictions, the estimates averaged over
  them), and rank means of these with expected error;
- the prediction's own direction: the signed predicted z (skewed genes err most where
  they are high), a tail probability (the fraction of the 64 neighbours farther from
  the prediction than the gene's pooled median distance), and rank means with it;
- with ``--seed-workdir W`` (the same benchmark trained with another ``--set seed=N``):
  the two LoRA seeds' disagreement ``|prediction - other seed's prediction|``, its rank
  mean with expected error, and expected error averaged over both seeds' neighbours;
- (not an AUROC) the fraction of the held-out spots the default threshold hides, at
  the default number of neighbours;
- the prediction alone (mean ``|bank z - prediction|`` over every bank spot),
  ``|predicted z|``, and the label's ceiling: ``|measured z|`` of the held-out spot
  itself (not an estimate: it needs the answer).

docs/queries.md quotes its output. Not part of the test suite; ~1 min per fold.

Usage::

    python benchmarks/explore_reliability_cv.py --workdir /tmp/napari-seal-genequery \
        [--seed-workdir /tmp/gq-seed1] [--json OUT]
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gene_query_her2st as b  # noqa: E402
from explore_route_ensemble import _ranks  # noqa: E402


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float):
    """Ridge on standardised ``x`` (dual form: n << D); returns ``predict(z)``."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = (x - mu) / sd
    ym = y.mean(0)
    a = np.linalg.solve(xs @ xs.T + alpha * np.eye(len(xs)), y - ym)
    w = xs.T @ a
    return lambda z: ((z - mu) / sd) @ w + ym


def log_depth(sample) -> np.ndarray:
    """``log1p`` total raw counts per spot, in the sample's spot order."""
    return np.log1p(np.asarray(sample.adata.X.sum(1), np.float64).ravel())


def rank_columns(u: np.ndarray) -> np.ndarray:
    """Each column's values replaced by their mid-ranks (ties share one) in [0, 1]."""
    return (_ranks(u) - 1.0) / max(len(u) - 1, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/napari-seal-genequery"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seed-workdir", type=Path, default=None,
                    help="a workdir trained with another --set seed=N")
    args = ap.parse_args()
    os.environ.setdefault("NAPARI_SEAL_CACHE", str(args.workdir / "cache"))
    from napari_seal.evaluate.retrieval_metrics import (
        MARKERS,
        auroc,
        measured_log1p_cp10k,
        variable_genes,
    )
    from napari_seal.io.hest import load_sample
    from napari_seal.predict.expression import expression_head
    from napari_seal.predict.reliability import (
        DEFAULT_MAX_UNCERTAINTY,
        neighbours,
        uncertainty,
    )
    from napari_seal.training.reference_bank import bank_zscores
    from napari_seal.training.runs import load_run

    wd = args.workdir
    samples = {s: load_sample(d) for s, d in b.section_dirs(wd, b.SECTIONS).items()}
    names = {s: samples[s].name for s in samples}
    res = {}
    for held in b.SECTIONS:
        rd = b.find_run(held, names, wd, own_only=True)
        if rd is None:
            continue
        run = load_run(rd)
        tag = b.seal_tag(rd)
        sz = {
            s: b.features(wd / "features", tag, samples[s], run.encoder)
            for s in samples
        }
        names_, expr, _ = measured_log1p_cp10k(samples[held])
        genes = variable_genes(names_, expr, run.panel.genes, n=50)
        pos = {g: i for i, g in enumerate(run.panel.genes)}
        genes += [g for g in MARKERS if g in pos and g not in genes]
        idx = np.array([pos[g] for g in genes])
        head = expression_head(run)
        mean, std = run.panel.mean[idx], run.panel.std[idx]

        def predz(e, head=head, genes=genes, mean=mean, std=std):
            return (head.output(head.hidden(e), head.index(genes)) - mean) / std

        def zs(s, run=run, idx=idx, sz=sz):
            m = np.asarray(run.panel.expression(samples[s]), np.float32)
            assert len(m) == samples[s].n_spots  # spot order kept
            keep = m.sum(1) > 0
            return run.panel.zscore(m)[:, idx][keep], sz[s][keep], keep

        mz, emb, hkeep = zs(held)
        pz = predz(emb)
        err = np.abs(pz - mz)
        lab = err > np.median(err, 0, keepdims=True)
        ng = len(genes)

        def score(u, lab=lab, ng=ng):
            return [auroc(u[:, j], lab[:, j]) for j in range(ng)]

        train = [s for s in samples if s != held]
        parts = [zs(s) for s in train]
        tdepth = np.concatenate(
            [log_depth(samples[s])[p[2]] for p, s in zip(parts, train, strict=True)]
        )
        tz = np.concatenate([p[0] for p in parts])
        te = np.concatenate([p[1] for p in parts])
        ts = np.concatenate(
            [np.full(len(p[0]), s) for p, s in zip(parts, train, strict=True)]
        )
        out: dict[str, list[float]] = {}
        bz = bank_zscores(run)[:, idx]
        nb = neighbours(run, emb, k=len(bz))
        order = np.argsort(-nb.similarity, axis=1)
        nidx = np.take_along_axis(nb.index, order, 1)
        nsim = np.take_along_axis(nb.similarity, order, 1)
        for k in (32, 64, 128, 256):
            v = bz[nidx[:, :k]]  # (n, k, G)
            out[f"omics spread k{k}"] = score(v.std(1))
            out[f"omics expected-error k{k}"] = score(np.abs(v - pz[:, None]).mean(1))
        v = bz[nidx]
        for tau in (0.01, 0.02, 0.05, 0.1):
            w = np.exp((nsim - nsim[:, :1]) / tau)
            w /= w.sum(1, keepdims=True)
            m1 = (v * w[:, :, None]).sum(1)
            spread = np.sqrt((w[:, :, None] * (v - m1[:, None]) ** 2).sum(1))
            out[f"omics spread softmax t{tau}"] = score(spread)
        unit = te / np.linalg.norm(te, axis=1, keepdims=True)
        sim = (emb / np.linalg.norm(emb, axis=1, keepdims=True)) @ unit.T
        img_order = np.argsort(-sim, axis=1)
        for k in (64, 128):
            v = tz[img_order[:, :k]]
            out[f"image expected-error k{k}"] = score(np.abs(v - pz[:, None]).mean(1))
        resid = np.zeros_like(tz)  # cross-validated |residual| of each training spot
        for s in train:
            m = ts == s
            resid[m] = np.abs(ridge_fit(te[~m], tz[~m], 1000.0)(te[m]) - tz[m])
        out["learned |residual| ridge"] = score(ridge_fit(te, resid, 1000.0)(emb))
        for k in (16, 64):
            out[f"neighbours' cv |residual| k{k}"] = score(
                resid[img_order[:, :k]].mean(1)
            )
        out["ridge to |measured z|"] = score(ridge_fit(te, np.abs(tz), 1000.0)(emb))
        out["prediction only: mean |bank z - pred|"] = score(
            np.abs(bz[None] - pz[:, None]).mean(1)
        )
        out["|predicted z|"] = score(np.abs(pz))
        # context the reliability map does not use yet: depth foreseen from the image
        # (low-depth spots have noisier CP10k), the spatial neighbourhood of the
        # held-out tile (boundaries: which cells a spot catches), and rank combinations
        pdepth = ridge_fit(te, tdepth[:, None], 1000.0)(emb)[:, 0]
        low_depth = np.repeat(-pdepth[:, None], ng, 1)
        out["image-predicted low depth"] = score(low_depth)
        xy = samples[held].spots_xy[hkeep]
        d = np.linalg.norm(xy[:, None] - xy[None], axis=2)
        near = d <= 1.6 * samples[held].inter_spot_dist_um / samples[held].mpp
        cnt = near.sum(1, keepdims=True)
        loc_mean = (near @ pz) / cnt
        loc_sd = np.sqrt(np.maximum((near @ pz**2) / cnt - loc_mean**2, 0))
        out["spatial: SD of neighbours' predictions"] = score(loc_sd)
        out["spatial: |prediction - neighbours' mean|"] = score(np.abs(pz - loc_mean))
        v64 = bz[nidx[:, :64]]
        spread64 = v64.std(1)
        experr64 = np.abs(v64 - pz[:, None]).mean(1)
        out["spatial: spread k64 averaged"] = score((near @ spread64) / cnt)
        out["spatial: expected error k64 averaged"] = score((near @ experr64) / cnt)
        combos = {
            "rank mean: spread k64 + low depth": (spread64, low_depth),
            "rank mean: expected error k64 + low depth": (experr64, low_depth),
            "rank mean: expected error k64 + spatial SD": (experr64, loc_sd),
            "rank mean: expected error + low depth + spatial SD": (
                experr64, low_depth, loc_sd),
        }
        for label, terms in combos.items():
            out[label] = score(sum(rank_columns(t) for t in terms))
        # the prediction's own direction, and a tail probability of the label
        out["signed predicted z"] = score(pz)
        dist64 = np.abs(v64 - pz[:, None])
        t = np.median(dist64.reshape(-1, ng), 0)
        out["tail probability k64"] = score((dist64 > t).mean(1))
        out["rank mean: expected error k64 + signed predicted z"] = score(
            rank_columns(experr64) + rank_columns(pz))
        if args.seed_workdir:
            rd2 = b.find_run(held, names, args.seed_workdir, own_only=True)
            if rd2 is None:
                print(f"{held}: no run in {args.seed_workdir}")
            else:
                run2 = load_run(rd2)
                if list(run2.panel.genes) != list(run.panel.genes):
                    msg = f"{held}: the two runs' panels differ"
                    raise SystemExit(msg)
                e2 = b.features(args.seed_workdir / "features", b.seal_tag(rd2),
                                samples[held], run2.encoder)[hkeep]
                head2 = expression_head(run2)
                pz2 = (head2.output(head2.hidden(e2), head2.index(genes))
                       - mean) / std
                gap = np.abs(pz - pz2)
                out["seeds: |prediction - other seed's|"] = score(gap)
                out["seeds: rank mean expected error k64 + disagreement"] = score(
                    rank_columns(experr64) + rank_columns(gap))
                nb2 = neighbours(run2, e2, k=64)
                v2 = bank_zscores(run2)[:, idx][nb2.index]
                both = (experr64 + np.abs(v2 - pz[:, None]).mean(1)) / 2
                out["seeds: expected error k64, both seeds' neighbours"] = score(both)
        hdepth = log_depth(samples[held])[hkeep]
        out["oracle low depth (needs the ST data)"] = score(
            np.repeat(-hdepth[:, None], ng, 1))
        out["ceiling: |measured z| (needs the answer)"] = score(np.abs(mz))
        res[held] = {m: float(np.nanmean(v)) for m, v in out.items()}
        # how much the default threshold hides (all spots, every panel gene / ERBB2)
        nb_default = neighbours(run, sz[held])
        for label, g in (("all panel genes", None), ("ERBB2", "ERBB2")):
            gs = run.panel.genes if g is None else [g]
            u = np.stack([uncertainty(run, nb_default, x) for x in gs], 1)
            res[held][f"fraction above {DEFAULT_MAX_UNCERTAINTY} SD, {label}"] = float(
                np.mean(u > DEFAULT_MAX_UNCERTAINTY))
        print(held, "done", flush=True)
    if not res:
        print(f"no runs under {wd}; run bench_gene_query_her2st.py --train first")
        return 1
    print(f"{'estimate':42s}", " ".join(f"{h:>5s}" for h in res), "| mean")
    for m in next(iter(res.values())):
        vals = [res[h][m] for h in res]
        print(f"{m:42s}", " ".join(f"{v:.3f}" for v in vals), f"| {np.mean(vals):.3f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
