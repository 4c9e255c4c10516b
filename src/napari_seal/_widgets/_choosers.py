"""The Explore dock's choosers: the model (the shipped one, runs offered, a folder
picker) and the workspace folder (where results nobody named go)."""

from __future__ import annotations

from pathlib import Path

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

    ``chosen(path)`` is emitted whenever a run folder becomes the current entry
    (picked, offered, or the picker's folder); the info line is the caller's.
    """

    chosen = Signal(str)

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

    def offer(self, run_dir: str | Path) -> None:
        """Make the run folder ``run_dir`` current (added to the list if new)."""
        run_dir = str(run_dir)
        idx = self.combo.findData(run_dir)
        if idx < 0:
            self.combo.insertItem(self.combo.count() - 1, f"run: {Path(run_dir).name}",
                                  run_dir)
            idx = self.combo.findData(run_dir)
        if idx == self.combo.currentIndex():
            self.chosen.emit(run_dir)
        else:
            self.combo.setCurrentIndex(idx)

    def path(self) -> str | None:
        """The current run folder (None: none chosen)."""
        data = self.combo.currentData()
        return None if data in (None, CHOOSE) else str(data)

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
        path = self.path()
        if path is not None:
            self.chosen.emit(path)


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
