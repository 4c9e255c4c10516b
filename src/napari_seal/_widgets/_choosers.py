"""The Explore dock's choosers: the model (the shipped one, runs offered, a folder
picker) and the workspace folder (where results nobody named go)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["CHOOSE", "ModelChoice", "WorkspaceRow"]

#: the combo entry that opens the folder picker
CHOOSE = "__choose__"


class ModelChoice(QWidget):
    """A combo of SEAL run folders (the shipped model first) and an info line.

    ``chosen(model)`` is emitted whenever a model becomes the current entry (picked,
    offered, or the picker's folder): a run folder (str) or an
    :class:`~napari_seal._widgets.live_jobs.EncoderWithHead`; the info line is the
    caller's.
    """

    chosen = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.combo = QComboBox()
        self.info = QLabel()
        self.info.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.info)
        self.problem = self._fill()
        self._accepted: Any = None  # the last entry the owner could use
        self._pending: Any = None  # the entry being handed to the owner
        self.combo.currentIndexChanged.connect(self._changed)

    def _fill(self) -> str:
        """The shipped model (if installed) and the picker; a note if it is missing."""
        from napari_seal.errors import ShippedModelError

        note = ""
        try:
            from napari_seal.models.shipped import SHIPPED_MODEL, shipped_run_path

            self.combo.addItem(f"shipped: {SHIPPED_MODEL}", str(shipped_run_path()))
        except ShippedModelError as err:
            note = f"No shipped model ({err}); choose a SEAL run folder."
        self.combo.addItem("Choose a SEAL run folder...", CHOOSE)
        return note

    def offer(self, model: Any) -> None:
        """Make ``model`` current (added to the list if new): a run folder, or an
        :class:`~napari_seal._widgets.live_jobs.EncoderWithHead`."""
        model = model if hasattr(model, "head") else str(model)
        idx = self._index(model)
        if idx < 0:
            idx = self.combo.count() - 1  # before "Choose..."
            is_head = hasattr(model, "head")
            label = model.label if is_head else f"run: {Path(model).name}"
            self.combo.insertItem(idx, label, model)
        if idx == self.combo.currentIndex():
            self._changed()
        else:
            self.combo.setCurrentIndex(idx)

    def _index(self, model: Any) -> int:
        """The entry holding ``model``, or -1 (Python equality, not QVariant's)."""
        n = self.combo.count()
        return next((i for i in range(n) if self.combo.itemData(i) == model), -1)

    def current(self) -> Any:
        """The current model: a run folder (str), an ``EncoderWithHead``, or None."""
        data = self.combo.currentData()
        chooser = isinstance(data, str) and data == CHOOSE
        return None if data is None or chooser else data

    def reject(self, model: Any, err: Exception) -> None:
        """Show ``err`` (the owner could not use ``model``), drop ``model``'s entry
        unless it is the shipped model, and go back to the last usable entry without
        emitting ``chosen`` again (the owner still holds that model)."""
        from napari_seal._widgets._common import notify_error

        notify_error(err)
        self._pending = None
        back = self._accepted if self._accepted != model else None
        self.combo.blockSignals(True)
        try:
            bad = self._index(model)
            if bad > 0:
                self.combo.removeItem(bad)
            self.combo.setCurrentIndex(max(self._index(back), 0))
        finally:
            self.combo.blockSignals(False)

    def emit_current(self) -> None:
        """Emit ``chosen`` for the current entry (e.g. once the owner is built)."""
        self._changed()

    def _changed(self, *_args: object) -> None:
        if self.combo.currentData() == CHOOSE:
            folder = QFileDialog.getExistingDirectory(self, "A SEAL run folder")
            if folder:
                self.offer(folder)
            else:
                self.combo.setCurrentIndex(0)
            return
        model = self.current()
        if model is not None:
            self._pending = model
            self.chosen.emit(model)
            if self._pending is model:  # not rejected while handled
                self._accepted = model


class WorkspaceRow(QWidget):
    """The workspace folder shown, and a "Change..." picker (``changed(path)``).

    Changing it sets ``NAPARI_SEAL_CACHE`` for this process, which every later store,
    run and export default follows (:func:`napari_seal.io.workspace.workspace_root`).
    """

    changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.button = QPushButton("Change...")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.button)
        self.button.clicked.connect(self._choose)
        self.refresh()

    def refresh(self) -> str:
        """Show the current workspace folder; return it."""
        from napari_seal.io.workspace import workspace_root

        root = str(workspace_root())
        self.label.setText(root)
        return root

    def _choose(self) -> None:
        import os

        folder = QFileDialog.getExistingDirectory(self, "Workspace folder")
        if folder:
            os.environ["NAPARI_SEAL_CACHE"] = str(Path(folder).resolve())
            self.changed.emit(self.refresh())
