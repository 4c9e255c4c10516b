"""Gene queries on her2st, leave one section out (issue 5 evaluation).

For each held-out section (C2-C6, one patient: within-patient figures) and the SEAL
run trained on the other four (the default ``train`` configuration, the ``cpu``
preset), this script scores on the held-out spots (spot-centred patches):

Gene -> image, AUROC per gene of the query score against "the spot is in the top
quartile of measured log1p CP10k" (``napari_seal.evaluate.retrieval_metrics``), over the 50
panel genes most variable in the held-out section plus ERBB2, GRB7, KRT19, CD74:

- ``omics-exemplar``: SEAL's omics route with exemplar query vectors: cosine with the
  mean omics embedding of the training spots in the top quartile of the gene minus
  the mean over all training spots (the run's reference bank; built from the
  training sections for runs trained before banks existed);
- ``omics-knn``: retrieval in the omics space: the mean measured z-score of the gene
  over the 16 training spots nearest the patch (cosine of its image embedding with
  their omics embeddings; the reliability map's neighbours);
- ``omics-profile``: the first omics route: cosine with the omics embedding of a
  synthetic profile (the gene 2 SD up, the rest at the mean) minus the all-mean one;
- ``omics-absolute``: the profile route without subtracting (``--no-contrast``);
- ``decoder``: SEAL's predicted expression of the gene (image->gene decoder);
- ``frozen ridge``: the frozen ``default`` encoder's best analogue, a ridge probe
  (scaler, PCA 256, ridge with alpha chosen by inner leave-one-section-out,
  ``napari_seal.predict.probe``) fitted on the four training sections to predict log1p
  CP10k, its prediction used as the score;
- ``seal ridge``: the same probe on the SEAL encoder's features;
- ``depth``: ``log1p`` total counts, the bar to clear.

Reliability (``napari_seal.evaluate.reliability_metrics``): per gene, the AUROC of
each uncertainty estimate of the reliability map for "the decoder's error at the spot
is above the gene's median", with ``predicted magnitude`` and depth as baselines.

Image -> expression, Recall@k within the held-out section: each spot's image
retrieves among all its spots' measured (smoothed, panel) profiles; ``omics`` by
cosine with their omics embeddings, the others by Pearson correlation of predicted
with measured panel expression (chance = k / n_spots).

SEAL runs are reused from the issue-3 benchmark when present (run folders with a
``DONE`` marker under ``/tmp/napari-seal-bench*`` or ``/tmp/*/bench/runs``, not a
shuffled control, whose training samples are the other four sections); otherwise
``--train`` trains them into ``--workdir`` (minutes per fold on 2 CPU cores). Its
imported sections are reused the same way. Not part of the test suite.

Usage::

    python benchmarks/bench_gene_query_her2st.py --workdir /tmp/napari-seal-genequery \\
        [--train] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

from napari_seal.evaluate.reliability_metrics import RELIABILITY_METHODS as RELIABILITY

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("C2", "C3", "C4", "C5", "C6")
IMAGES = {
    "C2": "5714_HE_BT_C2.jpg",
    "C3": "5714_HE_BT_D1.jpg",
    "C4": "5714_HE_BT_D2.jpg",
    "C5": "5714_HE_BT_E1.jpg",
    "C6": "5714_HE_BT_E2.jpg",
}
METHODS = (
    "omics-exemplar",
    "omics-knn",
    "omics-profile",
    "omics-absolute",
    "decoder",
    "frozen ridge",
    "seal ridge",
    "depth",
)
#: saved fold results of another version are recomputed
FOLD_VERSION = 4
RECALL_METHODS = ("omics", "decoder", "frozen ridge", "seal ridge")
#: where the issue-3 benchmark leaves its imported sections and runs (under /tmp)
SAMPLE_GLOBS = ("napari-seal-bench*/samples/{sec}/st", "*/bench/samples/{sec}/st")
RUN_GLOBS = ("napari-seal-bench*/**/DONE", "*/bench/runs/*/DONE")

log = logging.getLogger("bench_gene_query_her2st")


def her2st_root() -> Path:
    env = os.environ.get("NAPARI_SEAL_SHARED_DATA")
    root = (Path(env) if env else REPO.parent / "shared" / "data") / "her2st" / "data"
    if not root.is_dir():
        sys.exit(f"her2st data not found at {root}; set NAPARI_SEAL_SHARED_DATA")
    return root


def section_dirs(workdir: Path, sections) -> dict[str, Path]:
    """HEST folders of the sections: the issue-3 benchmark's, else imported here."""
    from napari_seal.io.convert import import_sample

    out = {}
    for sec in sections:
        found = sorted(
            p for g in SAMPLE_GLOBS for p in Path("/tmp").glob(g.format(sec=sec))
        )
        if found:
            out[sec] = Path(found[0]).parent
            continue
        dest = workdir / "samples" / sec
        if not (dest / "st").is_dir():
            root = her2st_root()
            import_sample(
                "legacy-st",
                [],
                out=dest,
                sample_id=f"her2st_{sec}",
                counts=root / "ST-cnts" / f"{sec}.tsv.gz",
                spots=root / "ST-spotfiles" / f"{sec}_selection.tsv",
                image=root / "ST-imgs" / "C" / sec / IMAGES[sec],
            )
        out[sec] = dest
    return out


def _run_training_names(run_dir: Path) -> set[str]:
    info = (
        json.loads((run_dir / "run.json").read_text())
        if (run_dir / "run.json").is_file()
        else {}
    )
    names = info.get("samples") or []
    out = set()
    for s in names:
        name = s.get("name") if isinstance(s, dict) else str(s)
        out.add(Path(str(name)).name)
    return out


def find_run(
    held: str, names: dict[str, str], workdir: Path, *, own_only: bool = False
) -> Path | None:
    """A finished SEAL run (not a shuffled control) trained on the other sections
    (``own_only``: only among ``workdir``'s runs, as for a recipe of ``--set``)."""
    want = {names[s] for s in names if s != held}
    own = sorted((workdir / "runs").glob("*/DONE"))
    others = sorted(p for g in RUN_GLOBS for p in Path("/tmp").glob(g))
    others = [] if own_only else others
    for done in [*own, *others]:
        run = Path(done).parent
        if not (run / "config.json").is_file():
            continue
        cfg = json.loads((run / "config.json").read_text())
        if cfg.get("shuffle_pairs"):
            continue
        trained = _run_training_names(run)
        if trained and (
            {Path(t).name for t in trained} == want
            or {t.removeprefix("her2st_") for t in trained}
            == {w.removeprefix("her2st_") for w in want}
        ):
            return run
    return None


def train_fold(
    samples, out: Path, *, max_steps: int | None, overrides: dict | None = None
) -> Path:
    from napari_seal.training.config import config_from_preset, preset_for_device
    from napari_seal.training.trainer import train

    cfg = config_from_preset(
        preset_for_device("cpu"), max_steps=max_steps, **(overrides or {})
    )
    resume = (out / "config.json").is_file()
    t0 = time.perf_counter()
    train(samples, out=out, config=cfg, resume=resume)
    log.warning("trained %s in %.0f s", out.name, time.perf_counter() - t0)
    return out


def run_fingerprint(run_dir: Path) -> str:
    """Short hash of a run's trained weights: the caches below are keyed by it, so a
    run retrained in the same folder is never scored with the old run's features."""
    import hashlib

    h = hashlib.sha1()
    for name in sorted(p.name for p in run_dir.glob("*.safetensors")):
        h.update(name.encode())
        h.update((run_dir / name).read_bytes())
    return h.hexdigest()[:12]


def seal_tag(run_dir: Path) -> str:
    """Feature-cache key of a SEAL run: its folder and its weights' fingerprint."""
    return f"seal-{run_dir.parent.name}-{run_dir.name}-{run_fingerprint(run_dir)}"


def features(cache: Path, key: str, sample, encoder) -> np.ndarray:
    from napari_seal.predict.features import spot_features
    from napari_seal.progress import drain

    f = cache / f"{key}-{sample.name}-{sample.n_spots}.npy"
    if f.is_file():
        return np.load(f)
    emb = drain(spot_features(sample, encoder))
    cache.mkdir(parents=True, exist_ok=True)
    np.save(f, emb)
    return emb


def ridge_predictions(train_feats, train_samples, test_feats, genes) -> np.ndarray:
    """Ridge probe on log1p CP10k of ``genes`` (alpha by inner leave-one-out)."""
    import napari_seal.predict.probe as _probe
    from napari_seal.evaluate.retrieval_metrics import measured_log1p_cp10k

    targets = []
    for s in train_samples:
        names, expr, _ = measured_log1p_cp10k(s)
        y, _ = _probe.gene_matrix(expr, names, genes)
        targets.append(y)
    alpha, _ = _probe.cv_alpha(train_feats, targets)
    probe = _probe.fit_probe(
        np.concatenate(train_feats), np.concatenate(targets), alpha=alpha
    )
    return probe.predict(test_feats)


def run_fold(held: str, samples: dict, run_dir: Path, workdir: Path) -> dict:
    import dataclasses

    import napari_seal.evaluate.retrieval_metrics as ev
    from napari_seal.evaluate.reliability_metrics import evaluate_reliability
    from napari_seal.models.factory import create_encoder
    from napari_seal.training.reference_bank import bank_from_samples
    from napari_seal.training.runs import load_run

    run = load_run(run_dir)
    genes = list(run.panel.genes)
    train_secs = [s for s in samples if s != held]
    bank_source = "run"
    if run.bank is None:
        bank_source = "built from the training sections"
        run = dataclasses.replace(
            run, bank=bank_from_samples(run.panel, [samples[s] for s in train_secs])
        )
    cache = workdir / "features"
    frozen = create_encoder(run.config.encoder)
    fz = {
        s: features(cache, f"frozen-{run.config.encoder}", samples[s], frozen)
        for s in samples
    }
    tag = seal_tag(run_dir)
    sz = {s: features(cache, tag, samples[s], run.encoder) for s in samples}
    test = samples[held]
    t0 = time.perf_counter()
    frozen_pred = ridge_predictions(
        [fz[s] for s in train_secs], [samples[s] for s in train_secs], fz[held], genes
    )
    seal_pred = ridge_predictions(
        [sz[s] for s in train_secs], [samples[s] for s in train_secs], sz[held], genes
    )

    def omics(mode: str, contrast: bool = True) -> tuple[np.ndarray, list[str]]:
        m = ev.gene_score_matrix(
            run, sz[held], genes, route="omics", omics_query=mode, contrast=contrast
        )
        return m, genes

    def knn_scores() -> tuple[np.ndarray, list[str]]:
        from napari_seal.predict.reliability import neighbours
        from napari_seal.training.reference_bank import bank_zscores

        nb = neighbours(run, sz[held], k=16)  # the route measured since issue 15
        return bank_zscores(run)[nb.index].mean(axis=1), genes

    base = {"frozen ridge": (frozen_pred, genes), "seal ridge": (seal_pred, genes)}
    rep = ev.evaluate_gene_queries(
        run,
        test,
        embeddings=sz[held],
        routes=("decoder",),
        baselines={
            "omics-exemplar": omics("exemplar"),
            "omics-knn": knn_scores(),
            "omics-profile": omics("profile"),
            "omics-absolute": omics("profile", contrast=False),
            **base,
        },
    )
    rec = ev.evaluate_image_to_expression(
        run, test, embeddings=sz[held], baselines=base
    )
    reliability = evaluate_reliability(run, test, embeddings=sz[held])
    log.warning("fold %s evaluated in %.0f s", held, time.perf_counter() - t0)
    return {
        "version": FOLD_VERSION,
        "held_out": held,
        "run": str(run_dir),
        "run_fingerprint": run_fingerprint(run_dir),
        "bank": bank_source,
        "bank_spots": int(run.bank.n_spots),
        "config": run.config.to_dict(),
        "panel_size": len(genes),
        "gene_query": rep,
        "recall": rec,
        "reliability": reliability,
    }


def summarise(folds: list[dict]) -> dict:
    out: dict = {"auroc_mean": {}, "markers": {}, "recall": {}}
    for m in METHODS:
        vals = [
            f["gene_query"]["methods"][m]["mean"]
            for f in folds
            if m in f["gene_query"]["methods"]
        ]
        out["auroc_mean"][m] = float(np.mean(vals)) if vals else None
        marks: dict[str, list[float]] = {}
        for f in folds:
            for g, v in (
                f["gene_query"]["methods"].get(m, {}).get("markers", {}).items()
            ):
                if np.isfinite(v):
                    marks.setdefault(g, []).append(v)
        out["markers"][m] = {g: float(np.mean(v)) for g, v in marks.items()}
    out["reliability"] = {}
    for m in RELIABILITY:
        vals = [f["reliability"]["methods"][m]["mean"] for f in folds]
        out["reliability"][m] = float(np.mean(vals))
    for m in RECALL_METHODS:
        for k in ("R@1", "R@5", "R@10", "chance@10"):
            vals = [f["recall"][m][k] for f in folds if m in f["recall"]]
            out["recall"].setdefault(m, {})[k] = float(np.mean(vals)) if vals else None
    return out


def table(folds: list[dict], summary: dict) -> str:
    lines = [
        "Gene -> image: mean AUROC over the held-out section's top-50 variable "
        "panel genes (+ markers); label = top quartile of log1p CP10k",
        "",
        "| method | " + " | ".join(f["held_out"] for f in folds) + " | mean | "
        "ERBB2 | GRB7 | KRT19 | CD74 |",
        "|---" * (len(folds) + 6) + "|",
    ]
    for m in METHODS:
        per = [
            f["gene_query"]["methods"].get(m, {}).get("mean", float("nan"))
            for f in folds
        ]
        marks = summary["markers"][m]
        lines.append(
            f"| {m} | "
            + " | ".join(f"{v:.3f}" for v in per)
            + f" | {summary['auroc_mean'][m]:.3f} | "
            + " | ".join(
                f"{marks.get(g, float('nan')):.3f}"
                for g in ("ERBB2", "GRB7", "KRT19", "CD74")
            )
            + " |"
        )
    lines += [
        "",
        "Reliability: AUROC of each uncertainty for 'the decoder's error is above the "
        "gene's median' (mean over the genes)",
        "",
        "| uncertainty | " + " | ".join(f["held_out"] for f in folds) + " | mean | "
        "ERBB2 |",
        "|---" * (len(folds) + 3) + "|",
    ]
    for m in RELIABILITY:
        per = [f["reliability"]["methods"][m] for f in folds]
        erbb2 = [p["markers"].get("ERBB2", float("nan")) for p in per]
        lines.append(
            f"| {m} | "
            + " | ".join(f"{p['mean']:.3f}" for p in per)
            + f" | {summary['reliability'][m]:.3f} | {np.nanmean(erbb2):.3f} |"
        )
    lines += [
        "",
        "Image -> expression within the held-out section: Recall@k (mean over folds)",
        "",
        "| method | R@1 | R@5 | R@10 | chance@10 |",
        "|---|---|---|---|---|",
    ]
    for m in RECALL_METHODS:
        r = summary["recall"][m]
        lines.append(
            f"| {m} | {r['R@1']:.3f} | {r['R@5']:.3f} | {r['R@10']:.3f} | "
            f"{r['chance@10']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/napari-seal-genequery"))
    ap.add_argument("--sections", nargs="+", default=list(SECTIONS))
    ap.add_argument(
        "--train",
        action="store_true",
        help="train the SEAL runs that are not found (cpu preset)",
    )
    ap.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="cap training steps (smoke runs only)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="train with this setting overriding the cpu preset (VALUE as JSON; a "
        "recipe search: use a --workdir of its own, only its runs are used)",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_seal_her2st import parse_overrides

    overrides = parse_overrides(args.set)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("NAPARI_SEAL_CACHE", str(args.workdir / "cache"))
    args.workdir.mkdir(parents=True, exist_ok=True)

    from napari_seal.io.hest import load_sample

    dirs = section_dirs(args.workdir, args.sections)
    samples = {s: load_sample(d) for s, d in dirs.items()}
    names = {s: samples[s].name for s in samples}
    folds = []
    for held in args.sections:
        run_dir = find_run(held, names, args.workdir, own_only=bool(overrides))
        if run_dir is None:
            if not args.train:
                log.warning(
                    "no SEAL run for held-out %s; pass --train to train it", held
                )
                continue
            run_dir = train_fold(
                [samples[s] for s in samples if s != held],
                args.workdir / "runs" / f"{held}-seal",
                max_steps=args.max_steps,
                overrides=overrides,
            )
        log.warning("fold %s: run %s", held, run_dir)
        saved = args.workdir / f"fold-{held}.json"
        old = json.loads(saved.read_text()) if saved.is_file() else {}
        if (
            old.get("run") == str(run_dir)
            and old.get("version") == FOLD_VERSION
            and old.get("run_fingerprint") == run_fingerprint(run_dir)
        ):
            folds.append(old)
            continue
        fold = run_fold(held, samples, run_dir, args.workdir)
        saved.write_text(json.dumps(fold, indent=1, default=float) + "\n")
        folds.append(fold)
    if not folds:
        log.warning("no fold evaluated")
        return 1
    summary = summarise(folds)
    text = table(folds, summary)
    print(text)
    result = {
        "protocol": "her2st leave-one-section-out, spot-centred patches",
        "label": "top quartile of log1p CP10k (strictly above the 75th pct)",
        "overrides": overrides,
        "summary": summary,
        "folds": folds,
    }
    out = args.json or args.workdir / "gene_query_her2st.json"
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    (args.workdir / "gene_query_her2st.md").write_text(text + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
