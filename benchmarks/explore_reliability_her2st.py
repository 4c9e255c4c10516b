"""Reliability estimates not offered by napari-seal, measured on the LOSO folds (issue 15).

For every held-out section whose SEAL run ``bench_gene_query_her2st.py`` left in
``--workdir`` (it trains them with ``--train``), the AUROC, per gene and averaged, of
candidate uncertainties for "the decoder's error at the spot is above the gene's
median" (the protocol of ``napari_seal.evaluate.reliability_metrics``):

- k = 8/16/32/64 neighbours in the omics space: spread, |neighbours' mean - prediction|,
  mean |neighbour - prediction| (expected error);
- neighbours among the training spots' *image* embeddings (spread, expected error);
- test-time augmentation: the SD of the decoder's prediction over the 8 dihedral views;
- baselines |predicted z| and the predicted value.

docs/queries.md quotes its output (run on the C2 and C3 folds of the lr 3e-4 runs).
Not part of the test suite.

Usage::

    python benchmarks/explore_reliability_her2st.py --workdir /tmp/napari-seal-genequery
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gene_query_her2st as b  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--workdir", type=Path, default=Path("/tmp/napari-seal-genequery"))
ap.add_argument("--json", type=Path, default=None)
args = ap.parse_args()
os.environ.setdefault("NAPARI_SEAL_CACHE", str(args.workdir / "cache"))
from napari_seal.io.hest import load_sample
from napari_seal.training.runs import load_run
from napari_seal.evaluate.retrieval_metrics import auroc, measured_log1p_cp10k, variable_genes, MARKERS
from napari_seal.predict.expression import expression_head
from napari_seal.predict.reliability import neighbours
from napari_seal.training.reference_bank import bank_zscores, bank_embeddings
from napari_seal.models.inference import encode_images
from napari_seal.tiling.grid import spot_patches

wd = args.workdir
dirs = b.section_dirs(wd, b.SECTIONS)
samples = {s: load_sample(d) for s, d in dirs.items()}
names = {s: samples[s].name for s in samples}
res = {}
for held in b.SECTIONS:
    rd = b.find_run(held, names, wd)
    if rd is None:
        continue
    run = load_run(rd)
    tag = b.seal_tag(rd)
    sz = {s: b.features(wd / "features", tag, samples[s], run.encoder) for s in samples}
    test = samples[held]
    names_, expr, depth = measured_log1p_cp10k(test)
    genes = variable_genes(names_, expr, run.panel.genes, n=50)
    pos = {g: i for i, g in enumerate(run.panel.genes)}
    genes += [g for g in MARKERS if g in pos and g not in genes]
    idx = np.array([pos[g] for g in genes])
    meas = np.asarray(run.panel.expression(test), np.float32)
    keep = meas.sum(1) > 0
    mz = run.panel.zscore(meas)[:, idx][keep]
    emb = sz[held][keep]
    head = expression_head(run)
    pz = (head.output(head.hidden(emb), head.index(genes)) - run.panel.mean[idx]) / run.panel.std[idx]
    err = np.abs(pz - mz)
    lab = err > np.median(err, 0, keepdims=True)
    Z = bank_zscores(run)[:, idx]
    out = {}
    for k in (8, 16, 32, 64):
        nb = neighbours(run, emb, k=k)
        v = Z[nb.index]  # n,k,G
        out[f"omics-spread k{k}"] = [auroc(v[:, :, j].std(1), lab[:, j]) for j in range(len(genes))]
        out[f"omics-|knnmean-pred| k{k}"] = [auroc(np.abs(v[:, :, j].mean(1) - pz[:, j]), lab[:, j]) for j in range(len(genes))]
        # expected abs error of prediction under the neighbour distribution
        out[f"omics-E|y-pred| k{k}"] = [auroc(np.abs(v[:, :, j] - pz[:, j:j+1]).mean(1), lab[:, j]) for j in range(len(genes))]
    # image-space neighbours: bank = training spots' image embeddings
    train = [s for s in samples if s != held]
    bank_img = []
    bank_z = []
    for s in train:
        e = np.asarray(run.panel.expression(samples[s]), np.float32)
        kk = e.sum(1) > 0
        bank_img.append(sz[s][kk]); bank_z.append(run.panel.zscore(e)[kk][:, idx])
    BI = np.concatenate(bank_img); BZ = np.concatenate(bank_z)
    BI = BI / np.linalg.norm(BI, axis=1, keepdims=True)
    E = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    S = E @ BI.T
    for k in (16, 32):
        top = np.argpartition(-S, k - 1, axis=1)[:, :k]
        v = BZ[top]
        out[f"image-spread k{k}"] = [auroc(v[:, :, j].std(1), lab[:, j]) for j in range(len(genes))]
        out[f"image-E|y-pred| k{k}"] = [auroc(np.abs(v[:, :, j] - pz[:, j:j+1]).mean(1), lab[:, j]) for j in range(len(genes))]
    # TTA: 8 dihedral views of the patch, std of decoder prediction
    patches = spot_patches(test, size_px=int(run.encoder.tile_px), mpp=float(run.encoder.mpp))[keep]
    preds = []
    for r in range(4):
        for f in (False, True):
            p = np.rot90(patches, r, axes=(1, 2))
            if f:
                p = p[:, :, ::-1]
            e = np.asarray(encode_images(run.encoder, np.ascontiguousarray(p), batch_size=64, precision="fp32"), np.float32)
            preds.append((head.output(head.hidden(e), head.index(genes)) - run.panel.mean[idx]) / run.panel.std[idx])
    P = np.stack(preds)  # 8,n,G
    out["tta-std"] = [auroc(P[:, :, j].std(0), lab[:, j]) for j in range(len(genes))]
    out["pred-magnitude"] = [auroc(np.abs(pz[:, j]), lab[:, j]) for j in range(len(genes))]
    out["pred-value"] = [auroc(pz[:, j], lab[:, j]) for j in range(len(genes))]
    res[held] = {m: float(np.nanmean(v)) for m, v in out.items()}
    print(held, json.dumps({m: round(v, 3) for m, v in res[held].items()}), flush=True)
ms = list(next(iter(res.values())))
print("MEAN over folds", len(res))
for m in ms:
    print(f"{m:28s}", " ".join(f"{res[h][m]:.3f}" for h in res), f"| {np.mean([res[h][m] for h in res]):.3f}")
if args.json:
    args.json.write_text(json.dumps(res, indent=1) + "\n")
