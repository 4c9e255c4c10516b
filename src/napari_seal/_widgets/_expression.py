"""Expression widget: predicted expression of a gene as an overlay, and at spots."""

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QCompleter,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_seal._widgets import _tooltips as tips
from napari_seal._widgets._common import (
    Job,
    add_or_update_layer,
    notify_error,
    path_field,
)
from napari_seal._widgets._reliability import (
    UNCERTAINTY,
    ReliabilityControls,
    paint_uncertainty,
)
from napari_seal._widgets._state import observe_state
from napari_seal.errors import SealError

OVERLAY = "predicted expression"
__all__ = ["OVERLAY", "UNCERTAINTY", "ExpressionWidget"]


class ExpressionWidget(QWidget):
    """Type a gene of the panel; paint its predicted expression over the slide."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        # load torch & co. now, not in a worker (see jobs.warm_imports)
        from napari_seal._widgets.jobs import warm_imports

        warm_imports("query")
        self.store = None
        self.head = None
        self.last_r = None
        self.job = None
        self.store_edit = QLineEdit()
        self.store_edit.setPlaceholderText("embedding store (.zarr)")
        self.head_edit = QLineEdit()
        self.head_edit.setPlaceholderText("SEAL run directory or bench head file")
        self.load_button = QPushButton("Load predictor")
        self.gene_edit = QLineEdit()
        self.gene_edit.setToolTip(tips.EXPR_GENE)
        self.gene_edit.setPlaceholderText("gene, e.g. ERBB2")
        self.cmap_combo = QComboBox()
        self.cmap_combo.addItems(["magma", "viridis", "inferno", "turbo", "plasma"])
        self.compare_check = QCheckBox("measured vs predicted at spots")
        self.compare_check.setChecked(True)
        self.reference = None
        self._shown = None  # (gene, raw image, uncertainty image or None)
        self._geometry = None  # (scale, translate) of the shown overlay
        self.reliability = ReliabilityControls()
        self.uncertainty_check = self.reliability.show_check
        self.hide_check = self.reliability.hide_check
        self.max_unc_spin = self.reliability.max_spin
        self.show_button = QPushButton("Show")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Store", self.store_edit)
        form.addRow("Predictor", self.head_edit)
        form.addRow(self.load_button)
        form.addRow("Gene", self.gene_edit)
        form.addRow("Colormap", self.cmap_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.compare_check)
        layout.addWidget(self.reliability)
        layout.addWidget(self.show_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.load_button.clicked.connect(self._on_load)
        observe_state(self, self.viewer, {"model": self.offer_run,
                                          "store": self.offer_store})
        self.show_button.clicked.connect(self._on_show)
        self.gene_edit.returnPressed.connect(self._on_show)
        self.cmap_combo.currentTextChanged.connect(self._on_colormap)
        self.reliability.changed.connect(self._repaint)

    def offer_run(self, run_dir) -> None:
        """Use a SEAL run (the shared state's ``model``: e.g. a finished fine-tune)."""
        self.head_edit.setText(str(run_dir))

    def offer_store(self, store) -> None:
        """Use an embedding store (the shared state's ``store``: e.g. a finished
        embed)."""
        self.store_edit.setText(str(store))
        self.store = None  # reopened on the next Show

    def _on_load(self) -> None:
        self._start(None, reload=True)

    def _on_show(self) -> None:
        self._start(self.gene_edit.text().strip(), reload=False)

    def _start(self, gene, *, reload: bool) -> None:
        """Open (unless already open) and predict in a worker: seconds on the GUI
        thread."""
        from napari_seal._widgets.view_jobs import iter_expression

        if self.job is not None and self.job.running:
            return
        try:
            store = self.store if self.store is not None and not reload else path_field(
                self.store_edit, "an embedding store")
            head = self.head if self.head is not None and not reload else path_field(
                self.head_edit, "a SEAL run or a head")
        except SealError as err:
            notify_error(err)
            return
        spots = self._spots_layer() if self.compare_check.isChecked() else None
        self.status.setText("Loading the predictor…" if gene is None
                            else f"{gene}: predicting…")
        spots_source = spots.metadata["napari_seal"]["source"] if spots else None
        self.job = Job(iter_expression, store, head, gene, spots_source=spots_source,
                       reference=None if reload else self.reference,
                       description="Expression", on_done=self._on_result)
        self.job.start()

    def _spots_layer(self):
        return next((layer for layer in self.viewer.layers
                     if layer.metadata.get("napari_seal", {}).get("kind") == "spots"
                     and layer.metadata["napari_seal"].get("source")), None)

    def _on_result(self, out) -> None:
        if out["head"] is not self.head:
            completer = QCompleter(list(out["head"].genes), self)
            completer.setCaseSensitivity(Qt.CaseInsensitive)
            completer.setFilterMode(Qt.MatchContains)
            self.gene_edit.setCompleter(completer)
        self.store, self.head = out["store"], out["head"]
        self.reference = out["reference"]
        has_map = self.reference is not None
        self.reliability.set_available(available=has_map)
        self.status.setText(f"{len(self.head.genes)} genes; {self.store.n_tiles} tiles"
                            + ("" if has_map
                               else "; no reliability map (no reference bank)"))
        if "gene" not in out:
            return
        gene = out["gene"]
        self._shown = (gene, out["image"], out["uncertainty"])
        self._geometry = (out["scale"], out["translate"])
        self.status.setText(f"{gene}: predicted expression on "
                            f"{self.store.n_tiles} tiles")
        layer = self._repaint()  # says how many tiles it hid, if any
        layer.reset_contrast_limits()
        layer.colorbar.visible = True
        if "compare_error" in out:
            notify_error(out["compare_error"])
        elif "measured" in out:
            self._compare(gene, out)

    def _repaint(self, *_):
        """Paint the shown gene's overlays from the computed images (no recompute)."""
        if self._shown is None:
            return None
        import numpy as np

        gene, image, unc = self._shown
        scale, translate = self._geometry
        shown = image
        hidden = 0
        if unc is not None and self.hide_check.isChecked():
            mask = unc > self.max_unc_spin.value()
            hidden = int(np.sum(mask & np.isfinite(image)))
            shown = np.where(mask, np.nan, image).astype(np.float32)
        meta = {"kind": "overlay", "gene": gene,
                "mpp": float(self.store.grid.slide_mpp), "hidden_unreliable": hidden}
        layer = add_or_update_layer(self.viewer, shown, {
            "name": OVERLAY, "colormap": self.cmap_combo.currentText(),
            "scale": scale, "translate": translate, "opacity": 0.7,
            "blending": "translucent", "metadata": {"napari_seal": meta},
        }, "image")
        paint_uncertainty(self.viewer, unc if self.reliability.show else None,
                          scale=scale, translate=translate, gene=gene,
                          max_sd=self.max_unc_spin.value())
        if hidden:
            self.status.setText(f"{gene}: {hidden} unreliable tiles hidden "
                                f"(uncertainty > {self.max_unc_spin.value():.1f} SD)")
        return layer

    def _compare(self, gene: str, out) -> None:
        spots = self._spots_layer()
        if spots is None:  # removed while predicting
            return
        self.last_r = out["r"]
        for label, values in (("measured", out["measured"]),
                              ("predicted", out["predicted"])):
            data, kwargs = spots.data, {
                "name": f"{label} {gene} at spots", "size": spots.size,
                "features": {"value": values}, "face_color": "value",
                "face_colormap": self.cmap_combo.currentText(), "border_width": 0,
                "visible": label == "measured",
            }
            add_or_update_layer(self.viewer, data, kwargs, "points")
        self.status.setText(
            f"{gene}: Pearson r (measured vs predicted at {len(out['measured'])} "
            f"spots) = {self.last_r:.3f}"
        )

    def _on_colormap(self, name: str) -> None:
        if OVERLAY in self.viewer.layers:
            self.viewer.layers[OVERLAY].colormap = name
