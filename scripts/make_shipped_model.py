"""Rebuild the shipped SEAL model ``src/napari_seal/data/models/seal-default-her2st``.

What it does, start to end (anyone can rerun it; nothing is downloaded)::

    .venv/bin/python scripts/make_shipped_model.py [--shared DIR] [--workdir DIR]

1. imports her2st sections C2-C6 (legacy ST, ``../shared/data/her2st``) to the HEST
   layout with napari-seal's own importer, into ``--workdir`` (default: a temporary
   folder, removed at the end; give a folder to keep and reuse the imports and the run);
2. trains SEAL on all five with the default ``train`` configuration (the ``cpu``
   preset, the embedded ``default`` EfficientNet-Lite0 encoder, seed 42), exactly what
   ``napari-seal train C2 C3 C4 C5 C6 --out RUN`` does on a CPU;
3. writes a compact copy of the run (``napari_seal.training.runs.export_run``: LoRA
   adapters in fp32, the omics VAE and image decoder stored as fp16 and upcast on load,
   no checkpoints) to the package and checks that it loads through ``load_run`` and
   predicts as the fp32 run does;
4. writes ``PROVENANCE.md`` and ``provenance.json`` beside it: data, licence and
   attribution, recipe, command, date, training time, size, and the held-out numbers
   of this recipe, read from the leave-one-section-out benchmark files in
   ``docs/images/`` (``benchmarks/bench_seal_her2st.py`` and
   ``benchmarks/bench_gene_query_her2st.py`` produce them).

The model must stay under 10 MB (checked here).

``--refresh`` adds (or rebuilds) the reference bank of the shipped model and rewrites
its provenance from the current benchmark files, without retraining: the bank is the
training sections' expression under the model's own panel and preprocessing
(``napari_seal.training.reference_bank.bank_from_samples``), what ``train`` writes at
the end of a run; the weights are untouched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEST = REPO / "src" / "napari_seal" / "data" / "models" / "seal-default-her2st"
MAX_BYTES = 10 * 2**20
PRESET = "cpu"
SECTIONS = ("C2", "C3", "C4", "C5", "C6")
IMAGES = {
    "C2": "5714_HE_BT_C2.jpg",
    "C3": "5714_HE_BT_D1.jpg",
    "C4": "5714_HE_BT_D2.jpg",
    "C5": "5714_HE_BT_E1.jpg",
    "C6": "5714_HE_BT_E2.jpg",
}
HER2ST_COMMIT = "85df7411b987a7dec3feff9718b869a7a82091ec"
BENCH_PEARSON = REPO / "docs" / "images" / "bench_seal_her2st.json"
BENCH_QUERY = REPO / "docs" / "images" / "bench_gene_query_her2st.json"


def _shared_default() -> Path:
    env = os.environ.get("NAPARI_SEAL_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def import_sections(shared: Path, workdir: Path) -> list[Path]:
    """Import C2-C6 to the HEST layout under ``workdir/samples`` (reused if there)."""
    from napari_seal.io.convert import import_sample

    root = shared / "her2st" / "data"
    out = []
    for sec in SECTIONS:
        dest = workdir / "samples" / sec
        if not (dest / "st").is_dir():
            import_sample(
                "legacy-st",
                [],
                out=dest,
                sample_id=f"her2st_{sec}",
                counts=root / "ST-cnts" / f"{sec}.tsv.gz",
                spots=root / "ST-spotfiles" / f"{sec}_selection.tsv",
                image=root / "ST-imgs" / "C" / sec / IMAGES[sec],
            )
            sys.stdout.write(f"imported {sec} -> {dest}\n")
        out.append(dest)
    return out


def _print_epoch(event: object) -> None:
    from napari_seal.training.events import EpochEvent

    if isinstance(event, EpochEvent):
        sys.stdout.write(f"{event}\n")
        sys.stdout.flush()


def train_run(samples: list[Path], run: Path) -> float:
    """Train (or reuse a finished) run with the ``cpu`` preset; return its seconds."""
    from napari_seal.training.config import config_from_preset
    from napari_seal.training.runs import DONE
    from napari_seal.training.trainer import train

    if (run / DONE).is_file():
        sys.stdout.write(f"reusing the finished run {run}\n")
    else:
        from napari_seal.io.hest import load_sample

        resume = run.is_dir() and any(run.iterdir())
        t0 = time.perf_counter()
        train(
            [load_sample(p) for p in samples],
            out=run,
            config=config_from_preset(PRESET),
            resume=resume,
            device="cpu",
            progress=_print_epoch,
        )
        (run / "train_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    f = run / "train_seconds.txt"
    return float(f.read_text()) if f.is_file() else float("nan")


def held_out_numbers(config: dict) -> dict:
    """This recipe's leave-one-section-out numbers, read from the benchmark files.

    Each benchmark fold trained the same configuration on four sections and tested on
    the fifth; the recipe is checked against the configs recorded per fold.
    """
    pearson = json.loads(BENCH_PEARSON.read_text())
    query = json.loads(BENCH_QUERY.read_text())
    ignore = {"weights"}
    recorded = [f["config"] for f in query["folds"]]
    same = all(
        {k: v for k, v in c.items() if k not in ignore}
        == {k: v for k, v in config.items() if k not in ignore}
        for c in recorded
    )
    rows = {}
    for r in pearson["results"]:
        if r["alpha"] == "hest" and r["method"] in ("seal", "frozen", "depth"):
            rows[f"{r['method']}/{r['targets']}"] = {
                "mean": r["pearson_mean"],
                "folds": r["folds"],
            }
    routes = {}
    # "omics" (the profile route) in benchmark files written before exemplar queries
    present = query["summary"]["auroc_mean"]
    for route in [
        r
        for r in ("decoder", "omics-exemplar", "omics-profile", "omics",
                  "frozen ridge", "depth")
        if present.get(r) is not None
    ]:
        routes[route] = {
            "mean": query["summary"]["auroc_mean"][route],
            "markers": query["summary"]["markers"][route],
            "folds": {
                f"her2st_{f['held_out']}": f["gene_query"]["methods"][route]["mean"]
                for f in query["folds"]
            },
        }
    return {
        "protocol": "leave-one-section-out over her2st C2-C6 (patient C): each fold "
        "trains this recipe on four sections and tests on the fifth; within-patient "
        "figures",
        "recipe_matches_benchmark_runs": same,
        "sources": [str(BENCH_PEARSON.relative_to(REPO)),
                    str(BENCH_QUERY.relative_to(REPO))],
        "hest_probe_pearson": rows,
        "hest_probe_note": "HEST probe (PCA 256 + ridge, 50 most variable genes), "
        "alpha hest; targets hest = log1p raw counts, normalized = log1p CP10k",
        "gene_query_auroc": routes,
        "reliability_auroc": query["summary"].get("reliability", {}),
        "default_route": _default_route(),
        "gene_query_label": query["label"],
        "gene_query_note": "AUROC of the per-spot query score against the top "
        "quartile of the measured gene, mean over the 50 most variable panel genes",
    }


def _default_route() -> str:
    from napari_seal.retrieval.scoring import DEFAULT_ROUTE

    return DEFAULT_ROUTE


def check_export(full_run: Path, shipped: Path, sample: Path) -> dict:
    """Load both runs through ``load_run``; compare their predictions on ``sample``."""
    import numpy as np

    from napari_seal.io.hest import load_sample
    from napari_seal.models.inference import encode_images
    from napari_seal.tiling.grid import spot_patches
    from napari_seal.training.runs import load_run

    a, b = load_run(full_run), load_run(shipped)
    s = load_sample(sample)
    patches = spot_patches(s, size_px=a.encoder.tile_px, mpp=a.encoder.mpp)
    ea = encode_images(a.encoder, patches, batch_size=32)
    eb = encode_images(b.encoder, patches, batch_size=32)
    pa, pb = a.predict_expression(ea), b.predict_expression(ea)
    x = a.panel.expression(s)
    qa, qb = a.encode_query(x), b.encode_query(x)
    return {
        "sample": s.name,
        "n_spots": int(len(patches)),
        "embedding_max_abs_diff": float(np.abs(ea - eb).max()),
        "decoder_max_abs_diff": float(np.abs(pa - pb).max()),
        "decoder_max_value": float(np.abs(pa).max()),
        "omics_cosine_min": float(
            np.min(
                np.sum(qa * qb, 1)
                / (np.linalg.norm(qa, axis=1) * np.linalg.norm(qb, axis=1))
            )
        ),
    }


def _md_table(title: str, rows: dict, label: str) -> list[str]:
    folds = list(next(iter(rows.values()))["folds"])
    out = [f"### {title}", "", f"| {label} | " + " | ".join(folds) + " | mean |",
           "|---" * (len(folds) + 2) + "|"]
    for name, r in rows.items():
        cells = " | ".join(f"{r['folds'][f]:.3f}" for f in folds)
        out.append(f"| {name} | {cells} | **{r['mean']:.3f}** |")
    return [*out, ""]


PROVENANCE_MD = """# {name}: the SEAL model shipped with napari-seal

A SEAL run (`napari_seal.training.runs.load_run` loads it) for the embedded `default`
encoder (ImageNet EfficientNet-Lite0, Apache-2.0): LoRA adapters on its last blocks, the
omics VAE and the image->gene decoder on a {n_genes}-gene panel (256 highly variable
genes + the default pathology markers present in the data, ERBB2 among them). It is
what `napari-seal predict`, `query` and the viewer use when no model is given.

## Training data
her2st, HER2-positive breast cancer, patient C, sections {sections}
(legacy Spatial Transcriptomics, {n_spots} spots), https://github.com/almaan/her2st
commit `{commit}`. Andersson A. et al., "Spatial deconvolution of HER2-positive
breast cancer delineates tumor-associated cell type interactions", Nat Commun 12,
6012 (2021).
Licence: Creative Commons Attribution 4.0 International (CC BY 4.0), as HEST-1k lists
it. This model is a derived work of that data; cite the paper when you use it.

## Recipe and command
The default `train` configuration on a CPU (preset `{preset}`: {epochs} epochs, batch
{batch}, lr {lr}, hard augmentation with {views} cached views, seed {seed}), i.e.

    napari-seal train C2 C3 C4 C5 C6 --out RUN        # on the imported sections

run by `python scripts/make_shipped_model.py` on {date}
(napari-seal {version}, {train_min:.1f} min of training on {cpu}).
Training precision: {precision}.
Stored compactly by `napari_seal.training.runs.export_run`: LoRA adapters in fp32, the
VAE and decoder in fp16 (upcast to fp32 on load), no checkpoints; {size_mb:.2f} MB of
run files. Against the fp32 run on {check_sample}: decoder predictions differ by at most
{dec_diff:.2g} (values up to {dec_max:.2g}), omics embeddings have cosine >= {cos:.6f},
and the image embeddings are identical (max difference {emb_diff:.2g}).

## Held-out numbers (leave one section out)
The shipped model itself saw all five sections, so it has no held-out section of its
own. These are the numbers of **the same recipe** trained on four sections and tested
on the fifth, from `benchmarks/bench_seal_her2st.py` and
`benchmarks/bench_gene_query_her2st.py` (`docs/benchmarks.md`, `docs/queries.md`;
recipe identical to those runs: {same}). One patient: within-patient figures; expect
lower numbers on a new patient.

{tables}
Read them with the baselines: on raw targets the spot depth alone beats every image
model, and the SEAL probe gain over the frozen encoder is small next to the spread
between folds. Gene queries take the `{default_route}` route by default, the better one on
these held-out sections (ERBB2 AUROC {erbb2:.3f}). `omics-exemplar` is the omics route
with this model's reference bank (`reference.npz`: the {bank_spots} training spots'
expression, {bank_mb:.2f} MB), `omics-profile` the synthetic-profile route it replaced.
"""


def _route_key(held: dict) -> str:
    route = held["default_route"]
    routes = held["gene_query_auroc"]
    if route == "omics":
        return next(r for r in ("omics-exemplar", "omics") if r in routes)
    return route


def _bank_info(dest: Path) -> dict:
    from napari_seal.training.preprocess import GenePanel
    from napari_seal.training.reference_bank import BANK, load_bank

    bank = load_bank(dest, GenePanel.load(dest / "panel.json").genes)
    if bank is None:
        return {}
    return {"spots": bank.n_spots, "bytes": (dest / BANK).stat().st_size}


def write_provenance(
    dest: Path,
    run: Path,
    *,
    name: str,
    train_s: float,
    check: dict,
    date: str | None = None,
) -> dict:
    """Write ``provenance.json`` and ``PROVENANCE.md`` into ``dest``; return them."""
    import platform

    from napari_seal import __version__
    from napari_seal.training.preprocess import GenePanel

    config = json.loads((run / "config.json").read_text())
    info = json.loads((run / "run.json").read_text())
    held = held_out_numbers(config)
    n_genes = len(GenePanel.load(run / "panel.json"))
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    bank_info = _bank_info(dest)
    prov = {"size_bytes": size,
        "reference_bank": bank_info,
        "name": name,
        "encoder": config["encoder"],
        "genes": n_genes,
        "training_data": {
            "dataset": "her2st",
            "sections": [f"her2st_{s}" for s in SECTIONS],
            "n_spots": sum(int(x["n_spots"]) for x in info.get("samples", [])),
            "source": f"https://github.com/almaan/her2st@{HER2ST_COMMIT}",
            "licence": "CC BY 4.0",
            "attribution": "Andersson A. et al., Nat Commun 12, 6012 (2021)",
        },
        "recipe": {"preset": PRESET, **config},
        "command": "python scripts/make_shipped_model.py",
        "date": date or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "version": __version__,
        "train_seconds": round(train_s, 1),
        "precision": info.get("precision"),
        "storage": {"heads_dtype": "float16", "check_vs_fp32": check},
        "held_out": held,
    }
    tables = _md_table(
        "HEST probe, mean Pearson over 50 genes (alpha hest)",
        held["hest_probe_pearson"],
        "method/targets",
    ) + _md_table(
        "Gene query, mean AUROC over 50 genes (" + held["gene_query_label"] + ")",
        held["gene_query_auroc"],
        "route",
    )
    rel = held.get("reliability_auroc") or {}
    if rel:
        tables += [
            "### Reliability map: AUROC of the uncertainty for above-median errors",
            "",
            "| uncertainty | AUROC (mean over genes and folds) |",
            "|---|---|",
            *[f"| {m} | {v:.3f} |" for m, v in rel.items()],
            "",
        ]
    md = PROVENANCE_MD.format(
        name=name,
        n_genes=n_genes,
        sections=", ".join(SECTIONS),
        n_spots=prov["training_data"]["n_spots"],
        commit=HER2ST_COMMIT,
        preset=PRESET,
        epochs=config["epochs"],
        batch=config["batch_size"],
        lr=config["lr"],
        views=config["augment_views"],
        seed=config["seed"],
        date=prov["date"],
        version=__version__,
        train_min=train_s / 60,
        cpu=f"{os.cpu_count()} CPU cores ({platform.machine()}, shared)",
        precision=info.get("precision"),
        size_mb=size / 2**20,
        check_sample=check["sample"],
        dec_diff=check["decoder_max_abs_diff"],
        dec_max=check["decoder_max_value"],
        cos=check["omics_cosine_min"],
        emb_diff=check["embedding_max_abs_diff"],
        same="yes" if held["recipe_matches_benchmark_runs"] else "NO",
        tables="\n".join(tables),
        erbb2=held["gene_query_auroc"][_route_key(held)]["markers"]["ERBB2"],
        default_route=held["default_route"],
        bank_spots=bank_info.get("spots", 0),
        bank_mb=bank_info.get("bytes", 0) / 2**20,
    )
    (dest / "PROVENANCE.md").write_text(md)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    prov["size_bytes"] = size
    (dest / "provenance.json").write_text(json.dumps(prov, indent=2) + "\n")
    return prov


def refresh(args: argparse.Namespace) -> int:
    """Write ``reference.npz`` from the imported sections; rewrite the provenance."""
    from napari_seal.io.hest import load_sample
    from napari_seal.training.preprocess import GenePanel
    from napari_seal.training.reference_bank import bank_from_samples, write_bank

    work = args.workdir or Path(tempfile.mkdtemp(prefix="seal-shipped-"))
    try:
        dirs = import_sections(args.shared, work)
        panel = GenePanel.load(args.dest / "panel.json")
        bank = bank_from_samples(panel, [load_sample(d) for d in dirs])
        path = write_bank(args.dest, bank)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    old = json.loads((args.dest / "provenance.json").read_text())
    prov = write_provenance(
        args.dest,
        args.dest,
        name=args.dest.name,
        train_s=float(old["train_seconds"]),
        check=old["storage"]["check_vs_fp32"],
        date=old["date"],
    )
    sys.stdout.write(
        f"bank: {bank.n_spots} spots x {len(bank.genes)} genes, "
        f"{path.stat().st_size / 2**20:.2f} MB; model total "
        f"{prov['size_bytes'] / 2**20:.2f} MB\n"
    )
    return 1 if prov["size_bytes"] > MAX_BYTES else 0


def main(argv: list[str] | None = None) -> int:
    """Rebuild the shipped model; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=_shared_default(),
                        help="the shared data folder holding her2st/")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep imports and the full run here (default: temporary)")
    parser.add_argument("--dest", type=Path, default=DEST)
    parser.add_argument("--refresh", action="store_true",
                        help="(re)write the reference bank and the provenance of "
                        "--dest from the benchmark files; no training")
    args = parser.parse_args(argv)
    if args.refresh:
        return refresh(args)

    from napari_seal.training.runs import export_run

    if not (args.shared / "her2st" / "data").is_dir():
        sys.stderr.write(f"her2st not found under {args.shared}; pass --shared DIR\n")
        return 2
    keep = args.workdir is not None
    work = args.workdir or Path(tempfile.mkdtemp(prefix="seal-shipped-"))
    try:
        samples = import_sections(args.shared, work)
        train_s = train_run(samples, work / "run")
        staged = work / "export"
        if staged.exists():
            shutil.rmtree(staged)
        export_run(work / "run", staged, heads_dtype="float16")
        check = check_export(work / "run", staged, samples[0])
        prov = write_provenance(
            staged, work / "run", name=args.dest.name, train_s=train_s, check=check
        )
        if prov["size_bytes"] > MAX_BYTES:
            sys.stderr.write(f"model is {prov['size_bytes'] / 2**20:.2f} MB > 10 MB\n")
            return 1
        if args.dest.exists():
            shutil.rmtree(args.dest)
        args.dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, args.dest)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    for p in sorted(args.dest.rglob("*")):
        if p.is_file():
            sys.stdout.write(f"{p.stat().st_size / 2**20:8.3f} MB  {p.name}\n")
    sys.stdout.write(
        f"total {prov['size_bytes'] / 2**20:.2f} MB; trained in {train_s:.0f} s; "
        f"check vs fp32: {json.dumps(check)}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
