"""Expression widget: predicted expression of a gene as an overlay, and at spots."""

from pathlib import Path

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
from napari_seal._widgets._common import add_or_update_layer, notify_error
from napari_seal.errors import SealError

OVERLAY = "predicted expression"


class ExpressionWidget(QWidget):
    """Type a gene of the panel; paint its predicted expression over the slide."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        # load torch & co. now, not in a worker (see napari_seal.jobs.warm_imports)
        from napari_seal.jobs import warm_imports

        warm_imports("query")
        self.store = None
        self.head = None
        self.last_r = None
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
        layout.addWidget(self.show_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.load_button.clicked.connect(self._on_load)
        self.show_button.clicked.connect(self._on_show)
        self.gene_edit.returnPressed.connect(self._on_show)
        self.cmap_combo.currentTextChanged.connect(self._on_colormap)

    def offer_run(self, run_dir) -> None:
        """Accept a finished fine-tuning run (called by the Fine-tune widget)."""
        self.head_edit.setText(str(run_dir))

    def offer_store(self, store) -> None:
        """Accept a finished embedding store (called by the Embed widget)."""
        self.store_edit.setText(str(store))
        self.store = None  # reopened on the next Show

    def _on_load(self) -> None:
        from napari_seal.predict import expression_head, open_store

        try:
            self.store = open_store(Path(self.store_edit.text().strip()))
            self.head = expression_head(Path(self.head_edit.text().strip()))
        except SealError as err:
            notify_error(err)
            return
        completer = QCompleter(list(self.head.genes), self)
        completer.setCaseSensitivity(Qt.CaseInsensitive)
        completer.setFilterMode(Qt.MatchContains)
        self.gene_edit.setCompleter(completer)
        self.status.setText(f"{len(self.head.genes)} genes; {self.store.n_tiles} tiles")

    def _on_show(self) -> None:
        from napari_seal.predict import expression_image

        if self.store is None or self.head is None:
            self._on_load()
            if self.store is None or self.head is None:
                return
        gene = self.gene_edit.text().strip()
        try:
            image, scale, translate = expression_image(self.store, self.head, gene)
        except SealError as err:
            notify_error(err)
            return
        layer = add_or_update_layer(self.viewer, image, {
            "name": OVERLAY, "colormap": self.cmap_combo.currentText(),
            "scale": scale, "translate": translate, "opacity": 0.7,
            "blending": "translucent",
            "metadata": {"napari_seal": {"kind": "overlay", "gene": gene,
                                         "mpp": float(self.store.grid.slide_mpp)}},
        }, "image")
        layer.reset_contrast_limits()
        layer.colorbar.visible = True
        self.status.setText(f"{gene}: predicted expression on {self.store.n_tiles} tiles")
        if self.compare_check.isChecked():
            self._compare(gene)

    def _compare(self, gene: str) -> None:
        from napari_seal.predict import (
            compare_at_spots,
            measured_expression,
            spot_predictions,
        )

        spots = [layer for layer in self.viewer.layers
                 if layer.metadata.get("napari_seal", {}).get("kind") == "spots"]
        if not spots or not spots[0].metadata["napari_seal"].get("source"):
            return
        from napari_seal.io.open import open_path

        try:
            sample = open_path(Path(spots[0].metadata["napari_seal"]["source"]))
            predicted = spot_predictions(sample, self.store, self.head, genes=[gene])
            measured = measured_expression(sample, gene)
            self.last_r = compare_at_spots(sample, predicted, gene)
        except SealError as err:
            notify_error(err)
            return
        pred_values = predicted[:, gene].X
        pred_values = pred_values.toarray().ravel() if hasattr(pred_values, "toarray") \
            else pred_values.ravel()
        for label, values in (("measured", measured), ("predicted", pred_values)):
            data, kwargs = spots[0].data, {
                "name": f"{label} {gene} at spots", "size": spots[0].size,
                "features": {"value": values}, "face_color": "value",
                "face_colormap": self.cmap_combo.currentText(), "border_width": 0,
                "visible": label == "measured",
            }
            add_or_update_layer(self.viewer, data, kwargs, "points")
        self.status.setText(
            f"{gene}: Pearson r (measured vs predicted at {len(measured)} spots) = "
            f"{self.last_r:.3f}"
        )

    def _on_colormap(self, name: str) -> None:
        if OVERLAY in self.viewer.layers:
            self.viewer.layers[OVERLAY].colormap = name
