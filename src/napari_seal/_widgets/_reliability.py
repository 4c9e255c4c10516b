"""The reliability map's controls and layer, shared by the Explore and Expression docks.

:class:`ReliabilityControls` is the row of "show uncertainty" and "hide where
uncertainty > x SD"; :func:`paint_uncertainty` shows (or removes) the map as its own
layer with the overlay's geometry. The map itself is computed in the core
(:mod:`napari_seal.predict.reliability`).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QDoubleSpinBox, QHBoxLayout, QVBoxLayout, QWidget

from napari_seal._widgets import _tooltips as tips
from napari_seal._widgets._common import add_or_update_layer
from napari_seal.predict.reliability import DEFAULT_MAX_UNCERTAINTY

__all__ = ["LIVE_UNCERTAINTY", "UNCERTAINTY", "ReliabilityControls",
           "paint_uncertainty"]

#: the reliability map's layer name (Expression dock)
UNCERTAINTY = "prediction uncertainty"
#: the live overlay's map (Explore dock, ``view``): a layer of its own, so neither dock
#: removes or overwrites the other's
LIVE_UNCERTAINTY = "uncertainty (live)"


class ReliabilityControls(QWidget):
    """"show uncertainty", "hide where uncertainty > x SD"; ``changed`` on any edit."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.show_check = QCheckBox("show uncertainty")
        self.show_check.setToolTip(tips.EXPR_UNCERTAINTY)
        self.hide_check = QCheckBox("hide where uncertainty >")
        self.hide_check.setToolTip(tips.EXPR_HIDE)
        self.max_spin = QDoubleSpinBox()
        self.max_spin.setRange(0.1, 5.0)
        self.max_spin.setSingleStep(0.1)
        self.max_spin.setValue(DEFAULT_MAX_UNCERTAINTY)
        self.max_spin.setSuffix(" SD")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.show_check)
        row = QHBoxLayout()
        row.addWidget(self.hide_check)
        row.addWidget(self.max_spin)
        layout.addLayout(row)
        for signal in (self.show_check.toggled, self.hide_check.toggled,
                       self.max_spin.valueChanged):
            signal.connect(lambda *_: self.changed.emit())

    @property
    def max_uncertainty(self) -> float | None:
        """The threshold when hiding is on, else None."""
        return float(self.max_spin.value()) if self.hide_check.isChecked() else None

    @property
    def show(self) -> bool:
        """Whether the map is shown as its own layer."""
        return self.show_check.isChecked()

    def set_available(self, *, available: bool) -> None:
        """Enable the controls (a model without a reference bank has no map)."""
        for widget in (self.show_check, self.hide_check, self.max_spin):
            widget.setEnabled(available)


def paint_uncertainty(
    viewer: Any, unc: Any, *, scale: Any, translate: Any, gene: str, max_sd: float,
    name: str = UNCERTAINTY,
) -> Any:
    """Show ``unc`` as the layer ``name`` (None: remove that layer)."""
    if unc is None:
        if name in viewer.layers:
            viewer.layers.remove(name)
        return None
    return add_or_update_layer(viewer, unc, {
        "name": name, "colormap": "gray", "scale": scale,
        "translate": translate, "opacity": 0.8, "blending": "translucent",
        "contrast_limits": (0.0, max(2.0 * float(max_sd), 1e-3)),
        "metadata": {"napari_seal": {"kind": "uncertainty", "gene": gene,
                                     "units": "SD of neighbours' z"}},
    }, "image")
