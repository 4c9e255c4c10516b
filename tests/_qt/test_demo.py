"""The main job: `napari-seal demo` end to end (short settings), report and pictures."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from napari_seal.cli import main


def test_demo_writes_report_with_screenshots(tmp_path, qapp):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--max-steps", "2", "--max-tiles", "120",
                 "--device", "cpu"])
    assert code == 0
    report = (out / "report.md").read_text()
    summary = json.loads((out / "demo.json").read_text())
    assert summary["gene"] in report
    for name in ("01_spots.png", "02_predicted.png", "03_query.png", "04_losses.png"):
        assert f"images/{name}" in report
        img = np.asarray(Image.open(out / "images" / name))
        assert img.shape[0] > 200
        assert img.std() > 5  # a real picture, not a blank
    # the overlay recolours the tissue: the predicted screenshot differs from spots
    a = np.asarray(Image.open(out / "images" / "01_spots.png").convert("RGB"), float)
    b = np.asarray(Image.open(out / "images" / "02_predicted.png").convert("RGB"),
                   float)
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    assert np.abs(a[:h, :w] - b[:h, :w]).mean() > 2
    assert (out / "run" / "DONE").exists()
    assert set(summary["spot_pearson"]) <= {"ERBB2", "KRT19", "CD74", "COL1A1"}
    # the shipped model comes first: held-out numbers and ERBB2 with no training
    from napari_seal.models.shipped import shipped_model_info, shipped_run_path

    assert summary["shipped_run"] == str(shipped_run_path())
    assert "ERBB2" in summary["shipped_pearson"]
    assert np.isfinite(summary["shipped_pearson"]["ERBB2"])
    shipped_at = report.index("The shipped model, no training")
    assert shipped_at < report.index("Fine-tuned:") < report.index("Fine-tuning losses")
    held = shipped_model_info()["held_out"]
    erbb2 = held["gene_query_auroc"]["decoder"]["markers"]["ERBB2"]
    assert f"{erbb2:.3f}" in report[shipped_at:report.index("Fine-tuned:")]
    img = np.asarray(Image.open(out / "images" / "shipped_predicted.png"))[..., :3]
    assert img.shape[0] > 200
    assert img.std() > 5
    # the shipped overlay recolours the tissue too
    h, w = min(a.shape[0], img.shape[0]), min(a.shape[1], img.shape[1])
    assert np.abs(a[:h, :w] - img[:h, :w].astype(float)).mean() > 2
    assert summary["timings_s"]["shipped_model"] > 0
    # a second run reuses the finished run and the store (resume, nothing recomputed)
    code = main(["demo", "--out", str(out), "--max-steps", "2", "--max-tiles", "120",
                 "--device", "cpu", "--no-report"])
    assert code == 0
    again = json.loads((out / "demo.json").read_text())
    assert again["timings_s"]["fine_tune"] < summary["timings_s"]["fine_tune"]
    assert again["shipped_pearson"] == summary["shipped_pearson"]


def test_demo_report_quotes_the_default_route_of_the_shipped_model():
    """Section 1b quotes the held-out AUROC of the default (exemplar) route and the
    decoder's, read from the shipped model's provenance."""
    from types import SimpleNamespace

    from napari_seal._widgets._report import _shipped_lines
    from napari_seal.models.shipped import shipped_model_info

    info = shipped_model_info()
    lines = _shipped_lines(
        SimpleNamespace(shipped_info=info, gene="ERBB2",
                        shipped_pearson={"ERBB2": 0.3}),
        {"shipped": "s.png"},
    )
    text = "\n".join(lines)
    ex = info["held_out"]["gene_query_auroc"]["omics-exemplar"]
    want = f"omics (exemplar, the default) route: mean / ERBB2 | {ex['mean']:.3f}"
    assert want in text
    assert "decoder route" in text
