"""Render the demo's viewer screenshots and write its Markdown report."""

from pathlib import Path

import numpy as np


def _save_png(array, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.asarray(array)).save(path)
    return path


def _loss_plot(losses, path: Path) -> Path | None:
    if not losses:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3), tight_layout=True)
    ax = fig.add_subplot(111)
    keys = [k for k in ("loss", "clip", "recon_vae", "recon_img") if k in losses[0]]
    steps = [row.get("step", i) for i, row in enumerate(losses)]
    for key in keys:
        ax.plot(steps, [row[key] for row in losses], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return path


def render_report(result, *, show: bool = False) -> Path:
    """Screenshot the viewer at each step of the loop and write ``report.md``."""
    import napari

    from napari_seal.io.hest import load_sample
    from napari_seal.layers import query_layers, sample_layers
    from napari_seal.predict.expression import (
        expression_head,
        expression_image,
        open_store,
    )
    from napari_seal.retrieval.results import read_scores
    from napari_seal.training.runs import load_run

    out = Path(result.out)
    images = out / "images"
    images.mkdir(exist_ok=True)
    viewer = napari.Viewer(show=True)
    try:
        viewer.window._qt_window.resize(1200, 900)
        sample = load_sample(result.sample_dir)
        for data, kwargs, layer_type in sample_layers(sample):
            getattr(viewer, f"add_{layer_type}")(data, **kwargs)
        viewer.reset_view()
        shots = {"spots": _save_png(viewer.screenshot(canvas_only=True, flash=False),
                                    images / "01_spots.png")}
        viewer.layers[-1].visible = False
        if result.shipped_store is not None:
            shipped = load_run(result.shipped_run)
            img, scale, translate = expression_image(
                open_store(result.shipped_store), expression_head(shipped), result.gene)
            layer = viewer.add_image(img, name=f"{result.gene} (shipped model)",
                                     colormap="magma", scale=scale,
                                     translate=translate, opacity=0.75)
            shots["shipped"] = _save_png(
                viewer.screenshot(canvas_only=True, flash=False),
                images / "shipped_predicted.png")
            layer.visible = False
        run = load_run(result.run_dir)
        store = open_store(result.store)
        head = expression_head(run)
        img, scale, translate = expression_image(store, head, result.gene)
        layer = viewer.add_image(img, name=f"predicted {result.gene}", colormap="magma",
                                 scale=scale, translate=translate, opacity=0.75)
        layer.colorbar.visible = True
        shots["overlay"] = _save_png(viewer.screenshot(canvas_only=True, flash=False),
                                     images / "02_predicted.png")
        layer.visible = False
        scores = read_scores(result.query_store)
        for data, kwargs, layer_type in query_layers(scores, mpp=sample.mpp):
            getattr(viewer, f"add_{layer_type}")(data, **kwargs)
        shots["query"] = _save_png(viewer.screenshot(canvas_only=True, flash=False),
                                   images / "03_query.png")
        if show:
            napari.run()
    finally:
        viewer.close()
    loss_png = _loss_plot(result.losses, images / "04_losses.png")
    return _write_markdown(result, shots, loss_png)


def _shipped_lines(result, rel: dict) -> list[str]:
    """Section 1b: the shipped model with no training, and its held-out numbers."""
    if "shipped" not in rel:
        return []
    info = result.shipped_info
    held = info.get("held_out", {})
    pearson = held.get("hest_probe_pearson", {})
    auroc = held.get("gene_query_auroc", {})
    rows = [f"| HEST probe Pearson, {k.split('/')[1]} targets: SEAL / frozen / depth | "
            f"{pearson[k]['mean']:.3f} / "
            f"{pearson[k.replace('seal', 'frozen')]['mean']:.3f} / "
            f"{pearson[k.replace('seal', 'depth')]['mean']:.3f} |"
            for k in ("seal/hest", "seal/normalized") if k in pearson]
    names = {"omics-exemplar": "omics (exemplar, the default)", "decoder": "decoder",
             "omics": "omics"}
    rows += [f"| gene query AUROC, {names[route]} route: mean / ERBB2 | "
             f"{a['mean']:.3f} / {a['markers'].get('ERBB2', float('nan')):.3f} |"
             for route, a in auroc.items() if route in names]
    return [
        f"## 1b. The shipped model, no training: predicted {result.gene}",
        f"`{info.get('name')}` (napari-seal's default when no model is given: "
        f"`{info.get('encoder')}` encoder + SEAL, trained on "
        f"{', '.join(info.get('training_data', {}).get('sections', []))}; "
        f"{info.get('training_data', {}).get('attribution', '')}, "
        f"{info.get('training_data', {}).get('licence', '')}).",
        f"![shipped]({rel['shipped']})",
        "",
        "Held out (the same recipe trained on four sections, tested on the fifth; "
        "mean over 5 folds):",
        "",
        "| measure | value |",
        "|---|---|",
        *rows,
        "",
        "At this section's spots (Pearson r; section C2 is one of the shipped model's "
        "training sections, so this is not a held-out figure):",
        "",
        "| gene | r |",
        "|---|---|",
        *[f"| {g} | {r:.3f} |" for g, r in result.shipped_pearson.items()],
        "",
        "Next: fine-tune on your own sample (below, a short run on this section).",
        "",
    ]


def _write_markdown(result, shots: dict, loss_png) -> Path:
    from napari_seal.io.atomic import atomic_write_text

    out = Path(result.out)
    rel = {k: Path(v).relative_to(out).as_posix() for k, v in shots.items()}
    lines = [
        "# napari-seal demo report",
        "",
        "The SEAL loop on the bundled her2st section C2 (HER2+ breast cancer, legacy "
        "ST; Andersson et al. 2021, CC BY 4.0), run headless on this machine.",
        "",
        f"- sample: `{Path(result.sample_dir).name}` (HEST layout)",
        f"- SEAL run: `{Path(result.run_dir).name}`",
        f"- embedding store: `{Path(result.store).name}`",
        "",
        "## 1. Spots on the tissue",
        f"![spots]({rel['spots']})",
        "",
        *_shipped_lines(result, rel),
        f"## 2. Fine-tuned: predicted {result.gene} expression (one pixel per 112 µm "
        "tile)",
        f"![overlay]({rel['overlay']})",
        "",
        "Measured vs predicted at the section's own spots (Pearson r; the model was "
        "fine-tuned on this section, so this is a training-set fit, not a benchmark):",
        "",
        "| gene | r |",
        "|---|---|",
        *[f"| {g} | {r:.3f} |" for g, r in result.spot_pearson.items()],
        "",
        f"## 3. Gene query: where does the tissue match {result.gene}?",
        f"![query]({rel['query']})",
        "",
    ]
    if loss_png is not None:
        lines += ["## 4. Fine-tuning losses",
                  f"![losses]({Path(loss_png).relative_to(out).as_posix()})", ""]
    lines += ["## Timings (s)", "", "| step | seconds |", "|---|---|",
              *[f"| {k} | {v:.1f} |" for k, v in result.timings_s.items()], ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
