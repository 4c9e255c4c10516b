"""The result that matters (issue 3): SEAL vs its frozen base on her2st, leave-one-out.

On the five her2st sections C2-C6 (one patient), each section is held out in turn.
For each fold this script trains

- SEAL: the default ``train`` configuration (the ``cpu`` preset) on the embedded
  ``default`` encoder, on the four training sections only;
- the control: the same training with the spot<->expression pairs shuffled
  (``shuffle_pairs=True``): a gain that survives shuffling does not come from
  expression;

and scores, with the HEST probe (``napari_seal.evaluate.benchmark``) fitted on the same four
sections and tested on the held-out one: the SEAL run, the frozen ``default``
encoder, the shuffled control, the ``color-stats`` baseline (28 colour statistics)
and the depth oracle (``log1p`` total counts), in both target modes (``hest`` =
``log1p`` raw counts, ``normalized`` = 1e4 per spot then ``log1p``) and both alpha
modes (``hest``, ``cv``). It prints per-fold and mean tables and the deltas
SEAL - frozen it is judged by, and writes a JSON and a bar plot.

Not part of the test suite: about 5-10 CPU minutes per training, 10 trainings.
Imports, runs and features are cached in ``--workdir``, so a rerun resumes.

Usage::

    python benchmarks/bench_seal_her2st.py --workdir /tmp/seal-her2st \\
        [--json OUT.json] [--plot OUT.png]
    python benchmarks/bench_seal_her2st.py --frozen-only     # no training
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

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("C2", "C3", "C4", "C5", "C6")
IMAGES = {
    "C2": "5714_HE_BT_C2.jpg",
    "C3": "5714_HE_BT_D1.jpg",
    "C4": "5714_HE_BT_D2.jpg",
    "C5": "5714_HE_BT_E1.jpg",
    "C6": "5714_HE_BT_E2.jpg",
}
TARGETS = ("hest", "normalized")
METHODS = ("seal", "frozen", "shuffled", "color-stats", "depth")
LABELS = {
    "seal": "SEAL (default, cpu preset)",
    "frozen": "frozen default",
    "shuffled": "SEAL, shuffled pairs",
    "color-stats": "color-stats",
    "depth": "depth oracle",
}

log = logging.getLogger("bench_seal_her2st")


def parse_overrides(items: list[str]) -> dict:
    """``--set KEY=VALUE`` items as training overrides (VALUE as JSON, else a string)."""
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def her2st_root() -> Path:
    env = os.environ.get("NAPARI_SEAL_SHARED_DATA")
    base = Path(env) if env else REPO.parent / "shared" / "data"
    root = base / "her2st" / "data"
    if not root.is_dir():
        sys.exit(f"her2st data not found at {root}; set NAPARI_SEAL_SHARED_DATA")
    return root


def import_sections(workdir: Path, sections: list[str]) -> list[Path]:
    """Import each section to the HEST layout once (cached in the workdir)."""
    from napari_seal.io.convert import import_sample

    root = her2st_root()
    out = []
    for sec in sections:
        dest = workdir / "samples" / sec
        if not (dest / "st").is_dir():
            t0 = time.perf_counter()
            import_sample(
                "legacy-st",
                [],
                out=dest,
                sample_id=f"her2st_{sec}",
                counts=root / "ST-cnts" / f"{sec}.tsv.gz",
                spots=root / "ST-spotfiles" / f"{sec}_selection.tsv",
                image=root / "ST-imgs" / "C" / sec / IMAGES[sec],
            )
            log.warning("imported %s in %.1f s", sec, time.perf_counter() - t0)
        out.append(dest)
    return out


class FrozenFeatureCache(dict):
    """``features_cache`` for ``bench`` that also keeps frozen-encoder features on disk.

    Keys are ``((encoder, weights_sha256, run), sample_name, n_spots)``; only entries
    without a run are stored (a run folder may be retrained under the same path).
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _file(self, key) -> Path | None:
        (name, sha, run), sample, n = key
        if run is not None:
            return None
        return self.folder / f"{name}-{(sha or 'builtin')[:12]}-{sample}-{n}.npy"

    def __contains__(self, key) -> bool:
        if super().__contains__(key):
            return True
        f = self._file(key)
        if f is not None and f.is_file():
            super().__setitem__(key, np.load(f))
            return True
        return False

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        f = self._file(key)
        if f is not None:
            np.save(f, value)


def _epochs(run_dir: Path) -> list[dict]:
    """The run's EpochEvent lines (metrics.jsonl survives interruptions/resumes)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        {k: r.get(k) for k in ("epoch", "step", "loss", "acc", "seconds")}
        for r in rows
        if r.get("type") == "EpochEvent"
    ]


def _train_info(done: dict) -> dict:
    epochs = done.get("epochs") or [{}]
    return {
        "seconds": done.get("seconds"),
        "final_loss": epochs[-1].get("loss"),
        "final_in_batch_acc": epochs[-1].get("acc"),
        "precision_asked": done.get("config", {}).get("precision"),
    }


def train_run(
    samples,
    out: Path,
    *,
    shuffle: bool,
    preset: str,
    max_steps: int | None,
    device: str,
    overrides: dict | None = None,
) -> tuple[Path, dict]:
    """Train (or reuse) one SEAL run; return its folder and training seconds."""
    from napari_seal.training.config import config_from_preset
    from napari_seal.training.trainer import train

    done = out / "bench_done.json"
    if done.is_file():
        return out, _train_info(json.loads(done.read_text()))
    cfg = config_from_preset(
        preset, shuffle_pairs=shuffle, max_steps=max_steps, **(overrides or {})
    )
    t0 = time.perf_counter()
    epochs: list[dict] = []

    def progress(event) -> None:
        if type(event).__name__ == "EpochEvent":
            epochs.append(
                {
                    "epoch": event.epoch,
                    "loss": event.loss,
                    "acc": event.acc,
                    "seconds": event.seconds,
                }
            )
            log.warning(
                "  %s epoch %d loss %.4f in-batch acc %.3f (%.0f s)",
                out.name,
                event.epoch,
                event.loss,
                event.acc,
                event.seconds,
            )

    resume = (out / "config.json").is_file()
    train(samples, out=out, config=cfg, resume=resume, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    epochs = _epochs(out) or epochs
    done.write_text(
        json.dumps({"seconds": seconds, "config": cfg.to_dict(), "epochs": epochs})
        + "\n"
    )
    return out, _train_info(json.loads(done.read_text()))


def _fold_scores(report: dict) -> dict[str, float]:
    return {f["test"]: f["pearson_mean"] for f in report["folds"]}


def run_frozen(samples, *, alphas, cache, device) -> dict:
    """Leave-one-out for the frozen encoders (each section embedded once each)."""
    from napari_seal.evaluate.benchmark import loso_bench

    res: dict = {}
    for alpha in alphas:
        for targets in TARGETS:
            for enc in ("default", "color-stats"):
                t0 = time.perf_counter()
                rep = loso_bench(
                    samples,
                    encoder=enc,
                    targets=targets,
                    alpha=alpha,
                    features_cache=cache,
                    device=device,
                )
                name = "frozen" if enc == "default" else enc
                res[(name, targets, alpha)] = rep
                log.warning(
                    "%-12s targets=%-10s alpha=%-4s mean %.4f (%.0f s)",
                    name,
                    targets,
                    alpha,
                    rep["pearson_mean"],
                    time.perf_counter() - t0,
                )
                if enc == "default":
                    res[("depth", targets, alpha)] = rep["depth_oracle"]
    return res


def run_seal(
    samples,
    names,
    workdir,
    *,
    alphas,
    cache,
    preset,
    max_steps,
    device,
    on_update,
    overrides=None,
) -> tuple[dict, dict]:
    """Train SEAL (all folds first), then the shuffled control; probe each run.

    Each run is trained on the four training sections of its fold and probed on the
    held-out one; ``on_update(results, train_info)`` is called after every run, so
    partial results are written while the rest trains.
    """
    from napari_seal.evaluate.benchmark import bench

    res: dict = {}
    info: dict = {}
    for method, shuffle in (("seal", False), ("shuffled", True)):
        for i, test_name in enumerate(names):
            train_s = [s for j, s in enumerate(samples) if j != i]
            out = workdir / "runs" / f"{test_name}-{method}"
            log.warning("fold %s: training %s", test_name, method)
            run_dir, info[(method, test_name)] = train_run(
                train_s,
                out,
                shuffle=shuffle,
                preset=preset,
                max_steps=max_steps,
                device=device,
                overrides=overrides,
            )
            for alpha in alphas:
                for targets in TARGETS:
                    rep = bench(
                        train_s,
                        [samples[i]],
                        run=run_dir,
                        targets=targets,
                        alpha=alpha,
                        features_cache=cache,
                        device=device,
                    )
                    entry = res.setdefault((method, targets, alpha), {"folds": []})
                    entry["folds"].extend(rep["folds"])
                    entry["pearson_mean"] = float(
                        np.mean([f["pearson_mean"] for f in entry["folds"]])
                    )
                    log.warning(
                        "fold %s %-8s targets=%-10s alpha=%-4s %.4f",
                        test_name,
                        method,
                        targets,
                        alpha,
                        rep["pearson_mean"],
                    )
            on_update(res, info)
    return res, info


def _cell(v: float, fmt: str) -> str:
    return "n/a" if np.isnan(v) else format(v, fmt)


def _mean(vals) -> tuple[float, str]:
    """Mean over the folds done so far, and a "(k/n)" note when some are missing."""
    a = np.asarray(vals, dtype=float)
    done = ~np.isnan(a)
    note = "" if done.all() else f" ({done.sum()}/{a.size})"
    return (float(a[done].mean()) if done.any() else float("nan")), note


def tables(results: dict, names: list[str], alphas) -> str:
    """Markdown tables: per fold and mean, per (targets, alpha); deltas vs frozen."""
    lines = []
    for alpha in alphas:
        for targets in TARGETS:
            lines.append(f"\n### targets = {targets}, alpha = {alpha}\n")
            lines.append("| method | " + " | ".join(names) + " | mean |")
            lines.append("|---" * (len(names) + 2) + "|")
            rows = {}
            for m in METHODS:
                rep = results.get((m, targets, alpha))
                if rep is None:
                    continue
                sc = _fold_scores(rep)
                rows[m] = [sc.get(n, float("nan")) for n in names]
                cells = " | ".join(_cell(v, ".4f") for v in rows[m])
                mean, note = _mean(rows[m])
                lines.append(f"| {LABELS[m]} | {cells} | {mean:.4f}{note} |")
            for m in ("seal", "shuffled"):
                if m in rows and "frozen" in rows:
                    d = np.array(rows[m]) - np.array(rows["frozen"])
                    cells = " | ".join(_cell(v, "+.4f") for v in d)
                    mean, note = _mean(d)
                    wins = int(np.sum(d[~np.isnan(d)] > 0))
                    lines.append(
                        f"| **{m} - frozen** | {cells} | **{mean:+.4f}**{note}, "
                        f"{wins} of {int(np.sum(~np.isnan(d)))} folds up |"
                    )
    return "\n".join(lines)


def plot(results: dict, names: list[str], path: Path, alpha: str = "hest") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    colors = {
        "seal": "#c0392b",
        "frozen": "#2c3e50",
        "shuffled": "#e39b8f",
        "color-stats": "#7f8c8d",
        "depth": "#bdc3c7",
    }
    for ax, targets in zip(axes, TARGETS, strict=True):
        methods = [m for m in METHODS if (m, targets, alpha) in results]
        for k, m in enumerate(methods):
            sc = _fold_scores(results[(m, targets, alpha)])
            vals = np.array([sc[n] for n in names if n in sc])
            ax.bar(k, vals.mean(), color=colors[m], width=0.7)
            ax.scatter(
                np.full(len(vals), k) + np.linspace(-0.2, 0.2, len(vals)),
                vals,
                color="black",
                s=10,
                zorder=3,
            )
            ax.text(
                k, vals.mean() + 0.01, f"{vals.mean():.3f}", ha="center", fontsize=8
            )
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(
            [LABELS[m].replace(" (", "\n(") for m in methods], fontsize=7
        )
        ax.set_title(f"targets = {targets} (alpha = {alpha})")
        ax.set_ylabel("mean Pearson r (50 genes), leave-one-section-out")
    fig.suptitle("her2st C2-C6, HEST probe; dots = held-out sections")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--workdir", type=Path, default=Path("/tmp/napari-seal-bench-her2st")
    )
    p.add_argument("--sections", nargs="+", default=list(SECTIONS))
    p.add_argument("--preset", default="cpu", help="training preset (default: cpu)")
    p.add_argument("--max-steps", type=int, default=None, help="cap training (smoke)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training setting of the preset (VALUE as JSON: "
        "--set lr=1e-3 --set epochs=30); recipe searches",
    )
    p.add_argument("--alphas", nargs="+", default=["hest", "cv"])
    p.add_argument("--frozen-only", action="store_true", help="skip the trainings")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--json", type=Path, default=REPO / "docs" / "images" / "bench_seal_her2st.json"
    )
    p.add_argument(
        "--plot", type=Path, default=REPO / "docs" / "images" / "bench_seal_her2st.png"
    )
    args = p.parse_args(argv)
    overrides = parse_overrides(args.set)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    from napari_seal.io.hest import load_sample

    t0 = time.perf_counter()
    paths = import_sections(args.workdir, args.sections)
    samples = [load_sample(pth) for pth in paths]
    names = [s.name for s in samples]
    cache = FrozenFeatureCache(args.workdir / "features")
    results = run_frozen(samples, alphas=args.alphas, cache=cache, device=args.device)

    def write(seal: dict, info: dict) -> str:
        allres = {**results, **seal}
        text = tables(allres, names, args.alphas)
        out = {
            "sections": names,
            "preset": args.preset,
            "overrides": overrides,
            "max_steps": args.max_steps,
            "training": {f"{m}/{n}": v for (m, n), v in info.items()},
            "total_seconds": time.perf_counter() - t0,
            "results": [
                {
                    "method": m,
                    "targets": t,
                    "alpha": a,
                    "pearson_mean": rep["pearson_mean"],
                    "folds": {f["test"]: f["pearson_mean"] for f in rep["folds"]},
                    "per_gene": {f["test"]: f.get("per_gene") for f in rep["folds"]},
                }
                for (m, t, a), rep in allres.items()
            ],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
        (args.workdir / "tables.md").write_text(text + "\n")
        plot(allres, names, args.plot, alpha=args.alphas[0])
        return text

    text = write({}, {})
    if not args.frozen_only:
        run_seal(
            samples,
            names,
            args.workdir,
            alphas=args.alphas,
            cache=cache,
            preset=args.preset,
            max_steps=args.max_steps,
            overrides=overrides,
            device=args.device,
            on_update=lambda res, info: write(res, info),
        )
        text = (args.workdir / "tables.md").read_text()
    print(text)
    print(f"\nwrote {args.json} and {args.plot} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
