"""Load widget: a slide and an ST sample (or a HEST folder / the bundled sample)."""

from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
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
    show_warning,
    warm_progress_ui,
)


def _path_row(tooltip: str, *, directory: bool) -> tuple[QWidget, QLineEdit]:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    edit = QLineEdit()
    edit.setToolTip(tooltip)
    browse = QPushButton("…")
    browse.setMaximumWidth(30)

    def _browse() -> None:
        if directory:
            path = QFileDialog.getExistingDirectory(row, "Choose a folder")
        else:
            path, _ = QFileDialog.getOpenFileName(row, "Choose a file")
        if path:
            edit.setText(path)

    browse.clicked.connect(_browse)
    layout.addWidget(edit)
    layout.addWidget(browse)
    return row, edit


class LoadWidget(QWidget):
    """Open a slide + ST sample, show spots sized in um, summarise, check alignment."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.sample = None
        self.alignment = None
        self.job = None
        # opening runs in a worker: load its compiled modules now (jobs.warm_imports)
        from napari_seal._widgets.jobs import warm_imports

        warm_imports("open")
        warm_progress_ui()
        form = QFormLayout()
        slide_row, self.slide_edit = _path_row(tips.LOAD_SLIDE, directory=False)
        st_row, self.st_edit = _path_row(tips.LOAD_ST, directory=True)
        self.mpp_spin = QDoubleSpinBox()
        self.mpp_spin.setRange(0.0, 100.0)
        self.mpp_spin.setDecimals(4)
        self.mpp_spin.setSpecialValueText("auto")
        self.mpp_spin.setToolTip(tips.LOAD_MPP)
        form.addRow("Slide", slide_row)
        form.addRow("ST sample", st_row)
        form.addRow("µm / px", self.mpp_spin)
        self.open_button = QPushButton("Open")
        self.bundled_button = QPushButton("Open bundled her2st sample")
        self.bundled_button.setToolTip(tips.LOAD_BUNDLED)
        self.summary = QLabel("Nothing loaded.")
        self.summary.setWordWrap(True)
        self.check = QLabel("")
        self.check.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.open_button)
        layout.addWidget(self.bundled_button)
        layout.addWidget(self.summary)
        layout.addWidget(self.check)
        layout.addStretch(1)
        self.open_button.clicked.connect(self._on_open)
        self.bundled_button.clicked.connect(self._on_bundled)

    def _on_open(self) -> None:
        """Open in a worker (a flat JPEG is decoded, the alignment check reads the
        tissue mask: seconds on the GUI thread); layers are added when it is done."""
        from napari_seal._widgets.view_jobs import iter_open_sample

        if self.job is not None and self.job.running:
            return
        self.open_button.setEnabled(False)
        self.bundled_button.setEnabled(False)
        self.summary.setText("Opening…")
        self.job = Job(iter_open_sample, st=self.st_edit.text().strip() or None,
                       slide=self.slide_edit.text().strip() or None,
                       mpp=self.mpp_spin.value() or None, description="Opening",
                       on_done=self._show, on_finished=self._on_finished)
        self.job.start()

    def _on_finished(self) -> None:
        self.open_button.setEnabled(True)
        self.bundled_button.setEnabled(True)
        if self.job is not None and self.job.error is not None:
            self.summary.setText("Nothing loaded." if self.sample is None
                                 else self.summary.text())

    def _on_bundled(self) -> None:
        from napari_seal.io.hest import bundled_sample_path

        self.st_edit.setText(str(bundled_sample_path()))
        self.slide_edit.setText("")
        self._on_open()

    def _show(self, result) -> None:
        from napari_seal.io.sample import SpatialSample
        from napari_seal.layers import sample_layers, slide_layer

        obj, alignment, note = result
        if not isinstance(obj, SpatialSample):
            add_or_update_layer(self.viewer, *slide_layer(obj))
            self.summary.setText(
                f"Slide {obj.width_px} x {obj.height_px} px, {obj.n_levels} levels, "
                f"{obj.mpp:.4f} µm/px ({obj.mpp_source})" if obj.mpp else "Slide"
            )
            self.check.setText("")
            return
        self.sample = obj
        for data, kwargs, layer_type in sample_layers(obj):
            add_or_update_layer(self.viewer, data, kwargs, layer_type)
        self.viewer.reset_view()
        self.summary.setText(
            f"<b>{obj.name}</b>: {obj.n_spots} spots, {obj.n_genes} genes, "
            f"{obj.mpp:.4f} µm/px ({obj.mpp_source}), spot diameter "
            f"{obj.spot_diameter_um:g} µm"
        )
        self.alignment = alignment
        if alignment is None:
            self.check.setText(note)
            return
        self.check.setText(alignment.message)
        if not alignment.ok:
            show_warning(alignment.message)
