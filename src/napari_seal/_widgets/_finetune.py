"""Fine-tune widget: SEAL training in a background thread with a live loss plot."""

from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_seal._widgets import _tooltips as tips
from napari_seal._widgets._common import (
    Job,
    notify_error,
    path_field,
    show_info,
    status_label,
    warm_progress_ui,
)
from napari_seal._widgets._plots import BarChart, LossPlot
from napari_seal.errors import SealError


def default_run_dir() -> Path:
    """A new run folder in the workspace (``<workspace>/runs/seal-run-<time>``)."""
    import time

    from napari_seal.io.workspace import workspace_root

    return workspace_root() / "runs" / time.strftime("seal-run-%Y%m%d-%H%M%S")


class FinetuneWidget(QWidget):
    """Pick samples, an encoder and a preset; train; watch the losses; compare."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.job = None
        self.bench_job = None
        self.run_dir = None
        self.bench_result = None
        self.samples_list = QListWidget()
        self.add_button = QPushButton("Add sample folder…")
        self.add_loaded_button = QPushButton("Add loaded samples")
        self.encoder_combo = QComboBox()
        self.preset_combo = QComboBox()
        self.preset_combo.setToolTip(tips.FT_PRESET)
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(0, 1000)
        self.epochs_spin.setSpecialValueText("preset")
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(0, 10**7)
        self.steps_spin.setSpecialValueText("all")
        # never a relative default: it would land wherever napari was started from
        self.out_edit = QLineEdit(str(default_run_dir()))
        self.resume_check = QCheckBox("resume")
        self.resume_check.setToolTip(tips.FT_RESUME)
        self.bench_check = QCheckBox("benchmark vs the frozen encoder when done")
        self.bench_check.setChecked(True)
        self.train_button = QPushButton("Train")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status = status_label()
        warm_progress_ui()
        self.loss_plot = LossPlot()
        self.bars = BarChart()
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.add_loaded_button)
        form = QFormLayout()
        form.addRow("Encoder", self.encoder_combo)
        form.addRow("Preset", self.preset_combo)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Max steps", self.steps_spin)
        form.addRow("Run folder", self.out_edit)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Training samples (HEST folders)"))
        layout.addWidget(self.samples_list)
        layout.addLayout(buttons)
        layout.addLayout(form)
        layout.addWidget(self.resume_check)
        layout.addWidget(self.bench_check)
        run_row = QHBoxLayout()
        run_row.addWidget(self.train_button)
        run_row.addWidget(self.cancel_button)
        layout.addLayout(run_row)
        layout.addWidget(self.status)
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.bars)
        self._fill_choices()
        self.add_button.clicked.connect(self._on_add)
        self.add_loaded_button.clicked.connect(self._on_add_loaded)
        self.train_button.clicked.connect(self._on_train)
        self.cancel_button.clicked.connect(self._on_cancel)

    def _fill_choices(self) -> None:
        # Import the training stack (torch, timm, peft, scanpy) now, while no job runs:
        # loading compiled modules holds the interpreter lock for long stretches and
        # would stall the event loop if the worker thread did it.
        from napari_seal._widgets.jobs import warm_imports

        warm_imports("train")
        from napari_seal.models.registry import list_encoders
        from napari_seal.training.config import PRESETS, preset_for_device

        for spec in list_encoders():
            self.encoder_combo.addItem(spec.name, spec.name)
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setCurrentText(preset_for_device())

    def samples(self) -> list[str]:
        return [self.samples_list.item(i).text()
                for i in range(self.samples_list.count())]

    def add_sample(self, path) -> None:
        if str(path) not in self.samples():
            self.samples_list.addItem(str(path))

    def _on_add(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "HEST sample folder")
        if path:
            self.add_sample(path)

    def _on_add_loaded(self) -> None:
        for layer in self.viewer.layers:
            meta = layer.metadata.get("napari_seal", {})
            if meta.get("kind") == "spots" and meta.get("source"):
                self.add_sample(meta["source"])

    def _on_train(self) -> None:
        from napari_seal._widgets.jobs import iter_finetune

        try:
            out = path_field(self.out_edit, "an output folder for the run")
        except SealError as err:
            notify_error(err)
            return
        self.loss_plot.clear()
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.job = Job(iter_finetune, self.samples(),
                       out=out,
                       preset=self.preset_combo.currentText(),
                       encoder=self.encoder_combo.currentData(),
                       epochs=self.epochs_spin.value() or None,
                       max_steps=self.steps_spin.value() or None,
                       resume=self.resume_check.isChecked(),
                       description="SEAL fine-tuning", on_event=self._on_event,
                       on_done=self._on_done, on_finished=self._on_finished)
        self.job.start()

    def _on_event(self, event) -> None:
        kind = type(event).__name__
        if kind == "StepEvent":
            self.loss_plot.add(event.step, {"loss": event.loss, "clip": event.clip,
                                            "recon_vae": event.recon_vae,
                                            "recon_img": event.recon_img})
            self.status.setText(f"epoch {event.epoch + 1}, step {event.step}/"
                                f"{event.total}: loss {event.loss:.3f}, "
                                f"in-batch retrieval {100 * event.acc:.0f}%")
        elif kind == "CheckpointEvent":
            self.status.setText(f"checkpoint saved ({event.reason}): {event.path}")
        elif getattr(event, "message", ""):
            self.status.setText(event.message)

    def _on_done(self, run_dir) -> None:
        self.run_dir = Path(run_dir)
        self.loss_plot.redraw()
        show_info(f"SEAL run ready: {self.run_dir}")
        from napari_seal._widgets._state import publish

        publish(self.viewer, model=str(self.run_dir))
        if self.bench_check.isChecked() and len(self.samples()) >= 2:
            self._bench()
        elif self.bench_check.isChecked():
            self.status.setText(f"Done: {self.run_dir}. The benchmark needs two or "
                                "more samples (leave-one-out).")

    def _bench(self) -> None:
        from napari_seal.evaluate.compare import iter_compare_with_base

        samples = self.samples()
        self.bench_job = Job(iter_compare_with_base, samples, self.run_dir,
                             description="Benchmark SEAL vs frozen",
                             on_done=self._on_bench)
        self.bench_job.start()

    def _on_bench(self, result) -> None:
        self.bench_result = result
        self.bars.show_bars(result, ylabel="mean Pearson (LOSO)",
                            title="HEST probe, leave-one-sample-out "
                                  "(samples seen in fine-tuning)")

    def _on_cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.setText("Cancelling: a checkpoint is written; tick 'resume' "
                                "and Train to continue.")

    def _on_finished(self) -> None:
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
