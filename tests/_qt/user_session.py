"""A user's napari session with napari-seal, as one process (run by
test_user_session.py).

Run with the Python of a plain-pip environment (triton installed with torch) under Xvfb,
where napari's canvas runs on Mesa's llvmpipe. It opens napari, File > Open Sample >
her2st, docks every napari-seal widget through npe2 (as the Plugins menu does), presses
every button once with empty inputs, then runs the loop with valid ones: a 1-step
fine-tune, a short embedding, an expression overlay, a gene query and a lookup. The
torch stack (torch, torchvision, timm, peft -> triton) is imported after the canvas
exists. Prints one JSON line and exits 0 only when no exception escaped and every step
worked.

    python tests/_qt/user_session.py OUT_DIR
"""

from __future__ import annotations

import faulthandler
import json
import sys
import time
import traceback
from pathlib import Path

faulthandler.enable()
OUT = Path(sys.argv[1])
OUT.mkdir(parents=True, exist_ok=True)
errors: list[str] = []
sys.excepthook = lambda *exc: errors.append("".join(traceback.format_exception(*exc)))

import napari  # noqa: E402
from qtpy.QtWidgets import QApplication, QFileDialog, QLineEdit, QPushButton  # noqa: E402

app = QApplication.instance() or QApplication([])
# a user who opens a file picker and cancels it: never leave a modal dialog open
QFileDialog.getOpenFileName = staticmethod(lambda *a, **k: ("", ""))
QFileDialog.getSaveFileName = staticmethod(lambda *a, **k: ("", ""))
QFileDialog.getOpenFileNames = staticmethod(lambda *a, **k: ([], ""))
QFileDialog.getExistingDirectory = staticmethod(lambda *a, **k: "")


def pump(seconds: float = 0.2) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def wait_job(widget, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        job = getattr(widget, "job", None)
        if job is None or not job.running:
            return
        time.sleep(0.02)
    msg = f"{type(widget).__name__} job still running after {timeout} s"
    raise TimeoutError(msg)


def modal_dialogs() -> list[str]:
    return [type(w).__name__ for w in app.topLevelWidgets()
            if w.isVisible() and w.isModal()]


report: dict = {"steps": []}
viewer = napari.Viewer(show=True)
pump(0.5)
viewer.open_sample("napari-seal", "her2st")
pump(0.5)
report["llvm_mapped_before_torch"] = "/libLLVM" in Path("/proc/self/maps").read_text()
widgets = {}
for name in ("Load", "Embed", "Expression", "Gene query", "Fine-tune"):
    _, widget = viewer.window.add_plugin_dock_widget("napari-seal", name)
    widgets[name] = widget
    pump(0.3)
report["steps"].append("docked")

# every button once with empty inputs: a notification at most, never a crash
for widget in widgets.values():
    for edit in widget.findChildren(QLineEdit):
        if edit.isEnabled() and not edit.isReadOnly():
            edit.setText("")
    for button in widget.findChildren(QPushButton):
        if (button.isEnabled() and button.isVisible()
                and "cancel" not in button.text().lower()):
            button.click()
            pump(0.1)
            wait_job(widget)
    pump(0.2)
report["steps"].append("empty-buttons")
report["modal_after_empty"] = modal_dialogs()

# the loop with valid inputs

ft = widgets["Fine-tune"]
ft.add_loaded_button.click()
ft.encoder_combo.setCurrentIndex(ft.encoder_combo.findData("test-vit"))
ft.preset_combo.setCurrentText("cpu-smoke")
ft.steps_spin.setValue(1)
ft.out_edit.setText(str(OUT / "run"))
ft.bench_check.setChecked(False)
ft.train_button.click()
wait_job(ft)
run_dir = OUT / "run"
report["trained"] = (run_dir / "DONE").is_file()
report["steps"].append("fine-tune")

emb = widgets["Embed"]
emb.offer_run(run_dir)
emb.store_edit.setText(str(OUT / "store.zarr"))
emb.run_button.click()
wait_job(emb)
report["embedded"] = (OUT / "store.zarr").is_dir()
report["steps"].append("embed")

from napari_seal.training.runs import load_run  # noqa: E402

genes = load_run(run_dir).panel.genes
gene = "ERBB2" if "ERBB2" in genes else genes[0]
ex = widgets["Expression"]
ex.store_edit.setText(str(OUT / "store.zarr"))
ex.head_edit.setText(str(run_dir))
ex.load_button.click()
wait_job(ex)
pump(0.3)
ex.gene_edit.setText(gene)
ex.show_button.click()
wait_job(ex)
pump(0.5)
report["overlay"] = any(gene in layer.name for layer in viewer.layers)
report["steps"].append("expression")

q = widgets["Gene query"]
q.offer_run(run_dir)
q.offer_store(OUT / "store.zarr")
q.query_edit.setText(gene)
q.run_button.click()
wait_job(q)
report["query"] = q.result is not None
report["steps"].append("query")

spots = next(layer for layer in viewer.layers
             if layer.metadata.get("napari_seal", {}).get("kind") == "spots")
row, col = spots.data[0]
mpp = viewer.layers[0].scale[-1]
q.lookup_at((col / mpp, row / mpp))
wait_job(q)
pump(0.2)
report["lookup_status"] = q.status.text()
report["lookup"] = (bool(getattr(q, "lookup_result", None))
                    and not q.status.text().startswith("0 "))
report["steps"].append("lookup")

report["triton_loaded"] = "triton" in sys.modules
report["modal_at_end"] = modal_dialogs()
report["errors"] = errors
viewer.screenshot(str(OUT / "session.png"), canvas_only=False)
viewer.close()
pump(0.3)
ok = (not errors and report["trained"] and report["embedded"] and report["overlay"]
      and report["query"] and report["lookup"] and not report["modal_at_end"])
print(json.dumps(report))
sys.exit(0 if ok else 1)
