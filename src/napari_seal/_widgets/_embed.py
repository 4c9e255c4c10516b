"""Embed widget: run an encoder (or a SEAL run) over the slide, cached and resumable."""

from pathlib import Path

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_seal._widgets import _tooltips as tips
from napari_seal._widgets._common import (
    Job,
    notify_error,
    source_layers,
    status_label,
    warm_progress_ui,
)
from napari_seal._widgets._state import observe_state, publish
from napari_seal.errors import SealError
from napari_seal.io.workspace import workspace_root


class EmbedWidget(QWidget):
    """Choose an encoder or a SEAL run and embed the slide into a zarr store."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.job = None
        self.store = None
        self.source_combo = QComboBox()
        self.encoder_combo = QComboBox()
        self.encoder_combo.setToolTip(tips.EMBED_ENCODER)
        self.weights_edit = QLineEdit()
        self.weights_edit.setPlaceholderText("local weights file (gated models)")
        self.run_edit = QLineEdit()
        self.run_edit.setPlaceholderText("SEAL run directory (optional)")
        self.run_edit.setToolTip(tips.EMBED_RUN)
        self.store_edit = QLineEdit()
        self.store_edit.setToolTip(tips.EMBED_STORE)
        self.store_edit.setPlaceholderText(
            f"automatic: in the workspace {workspace_root()}")
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 4096)
        self.batch_spin.setValue(32)
        form = QFormLayout()
        form.addRow("Slide", self.source_combo)
        form.addRow("Encoder", self.encoder_combo)
        form.addRow("Weights", self.weights_edit)
        form.addRow("SEAL run", self.run_edit)
        form.addRow("Store", self.store_edit)
        form.addRow("Batch", self.batch_spin)
        self.run_button = QPushButton("Embed")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status = status_label()
        warm_progress_ui()
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.cancel_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._fill_encoders()
        self._refresh_sources()
        observe_state(self, self.viewer, {"model": self.offer_run})
        self.viewer.layers.events.inserted.connect(self._refresh_sources)
        self.viewer.layers.events.removed.connect(self._refresh_sources)
        self.run_button.clicked.connect(self._on_run)
        self.cancel_button.clicked.connect(self._on_cancel)

    def _fill_encoders(self) -> None:
        # Import the embedding stack now, not in the worker (see FinetuneWidget).
        from napari_seal._widgets.jobs import warm_imports

        warm_imports("embed")
        from napari_seal.models.registry import list_encoders

        for spec in list_encoders():
            label = spec.name + ("  (gated: needs weights)" if spec.gated else "")
            self.encoder_combo.addItem(label, spec.name)

    def _refresh_sources(self, *_args) -> None:
        current = self.source_combo.currentData()
        self.source_combo.clear()
        for name, path in source_layers(self.viewer):
            self.source_combo.addItem(name, path)
        if current is not None:
            idx = self.source_combo.findData(current)
            if idx >= 0:
                self.source_combo.setCurrentIndex(idx)

    def offer_run(self, run_dir) -> None:
        """Use a SEAL run (the shared state's ``model``: e.g. a finished fine-tune)."""
        self.run_edit.setText(str(run_dir))

    def _on_run(self) -> None:
        from napari_seal._widgets.jobs import iter_embed_paths

        source = self.source_combo.currentData()
        store = self.store_edit.text().strip()
        if not source:
            notify_error(SealError("Load a slide first (File > Open or the Load dock)"))
            return
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.job = Job(iter_embed_paths, source, store=Path(store) if store else None,
                       encoder=self.encoder_combo.currentData(),
                       weights=self.weights_edit.text().strip() or None,
                       run=self.run_edit.text().strip() or None,
                       batch_size=self.batch_spin.value(), description="Embedding",
                       on_event=self._on_event, on_done=self._on_done,
                       on_finished=self._on_finished)
        self.job.start()

    def _on_event(self, event) -> None:
        if not getattr(event, "total", None):
            self.status.setText(getattr(event, "message", ""))
            return
        rate = event.info.get("tiles_per_s") if hasattr(event, "info") else None
        eta = event.info.get("eta_s") if hasattr(event, "info") else None
        text = f"{event.done}/{event.total} tiles"
        if rate:
            text += f", {rate:.1f} tiles/s"
        if eta is not None:
            text += f", ETA {eta:.0f} s"
        self.status.setText(text)

    def _on_done(self, store) -> None:
        self.store = store
        self.status.setText(f"Done: {store}")
        publish(self.viewer, store=str(store))

    def _on_cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.setText("Cancelled: rerun to resume from the finished chunks.")

    def _on_finished(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

