"""Render the reliability map in a napari viewer: ``docs/images/reliability_map.png``.

::

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python \\
        scripts/make_reliability_figure.py [--run RUN] [--gene ERBB2] [--out PNG]

Opens the bundled her2st section C2 with the Load widget, embeds it with ``--run``
(default: the shipped model; the docs figure uses a leave-one-section-out run that
never saw C2), and shows, through the Expression widget, the predicted expression of
``--gene``, its uncertainty and the prediction with the unreliable tiles hidden, in
napari's grid mode (one panel per layer). Prints the fraction of tiles hidden.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _wait(widget, timeout_s: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout_s
    while widget.job is not None and widget.job.running:
        if time.monotonic() > end:
            msg = f"{type(widget).__name__} still running"
            raise TimeoutError(msg)
        QApplication.processEvents()
        time.sleep(0.02)


def _label(img, names: list[str], shape: tuple[int, int]) -> None:
    """Write each grid cell's layer name at its top (napari's grid has no titles)."""
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=22)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    rows, cols = shape
    w, h = img.size[0] // cols, img.size[1] // rows
    for i, name in enumerate(names[: rows * cols]):
        r, c = divmod(i, cols)
        draw.text((c * w + 12, r * h + 10), name, fill=(20, 20, 20), font=font)


def main(argv: list[str] | None = None) -> int:
    """Render the figure; return the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None)
    ap.add_argument("--gene", default="ERBB2")
    ap.add_argument(
        "--out", type=Path, default=REPO / "docs/images/reliability_map.png"
    )
    args = ap.parse_args(argv)

    import napari
    import numpy as np
    from PIL import Image

    from napari_seal._widgets._expression import OVERLAY, UNCERTAINTY, ExpressionWidget
    from napari_seal._widgets._load import LoadWidget
    from napari_seal.embedding.inputs import (
        default_store_path,
        resolve_encoder,
        resolve_slide,
    )
    from napari_seal.embedding.run import embed
    from napari_seal.io.hest import bundled_sample_path, load_sample
    from napari_seal.models.shipped import shipped_run_path

    run = args.run or shipped_run_path()
    sample = load_sample(bundled_sample_path())
    resolved = resolve_encoder(run)
    store = embed(sample, resolved, default_store_path(resolve_slide(sample), resolved))

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1500, 1100)
    load = LoadWidget(viewer)
    load.bundled_button.click()
    _wait(load)
    widget = ExpressionWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Expression")
    widget.compare_check.setChecked(False)
    widget.store_edit.setText(str(store))
    widget.head_edit.setText(str(run))
    widget.gene_edit.setText(args.gene)
    widget.uncertainty_check.setChecked(True)
    widget.show_button.click()
    _wait(widget)
    unc = np.asarray(viewer.layers[UNCERTAINTY].data)
    full = np.asarray(viewer.layers[OVERLAY].data).copy()
    viewer.layers[OVERLAY].name = f"predicted {args.gene}"
    widget.hide_check.setChecked(True)  # a new overlay layer: the hidden version
    hidden = viewer.layers[OVERLAY]
    hidden.name = f"{args.gene}, unreliable hidden"
    viewer.layers[UNCERTAINTY].name = f"uncertainty of {args.gene}"
    for layer in list(viewer.layers):
        if layer._type_string != "image":
            viewer.layers.remove(layer)
    n = int(np.isfinite(full).sum())
    n_hidden = n - int(np.isfinite(np.asarray(hidden.data)).sum())
    viewer.theme = "light"  # hidden tiles show as the light background, not as "low"
    viewer.grid.enabled = True
    viewer.grid.shape = (2, 2)
    viewer.reset_view()
    for _ in range(20):
        napari.qt.get_qapp().processEvents()
        time.sleep(0.05)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(viewer.screenshot(canvas_only=True, flash=False)))
    _label(img, [layer.name for layer in viewer.layers], (2, 2))
    img.save(args.out)
    sys.stdout.write(
        f"wrote {args.out}: {n_hidden} of {n} tiles hidden (uncertainty > "
        f"{widget.max_unc_spin.value():.1f} SD); uncertainty median "
        f"{np.nanmedian(unc):.2f}, 90th pct {np.nanpercentile(unc, 90):.2f}\n"
    )
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
