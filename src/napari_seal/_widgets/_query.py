"""Gene query widget: type a gene or signature, see where the tissue matches it."""

from pathlib import Path

import numpy as np
from qtpy.QtCore import QSize
from qtpy.QtGui import QIcon, QImage, QPixmap
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_seal._widgets import _tooltips as tips
from napari_seal._widgets._common import Job, add_or_update_layer, notify_error
from napari_seal._widgets._plots import GeneBars
from napari_seal._widgets._state import observe_state
from napari_seal.errors import SealError


def _icon(rgb: np.ndarray) -> QIcon:
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    h, w = rgb.shape[:2]
    image = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QIcon(QPixmap.fromImage(image))


class QueryWidget(QWidget):
    """Gene -> image retrieval with a score map, a top-q outline and a tile gallery;
    click the canvas (with Alt) for image -> expression lookup."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        # load torch & co. now, not in a worker (see jobs.warm_imports)
        from napari_seal._widgets.jobs import warm_imports

        warm_imports("query")
        self.result = None
        self.top = None
        self.lookup_result = None
        self.job = None
        self._query_slide = (None, None)
        self.run_edit = QLineEdit()
        self.run_edit.setPlaceholderText("SEAL run directory")
        self.store_edit = QLineEdit()
        self.store_edit.setPlaceholderText("embedding store (.zarr) of that run")
        self.query_edit = QLineEdit()
        self.query_edit.setPlaceholderText("ERBB2  or  ERBB2,GRB7  or  ERBB2:1,ESR1:-1")
        self.query_edit.setToolTip(tips.QUERY_GENES)
        self.route_combo = QComboBox()
        from napari_seal.retrieval.scoring import DEFAULT_ROUTE, ROUTES

        self.route_combo.addItems(list(ROUTES))
        self.route_combo.setCurrentText(DEFAULT_ROUTE)
        self.route_combo.setToolTip(tips.QUERY_ROUTE)
        self.q_spin = QDoubleSpinBox()
        self.q_spin.setRange(0.01, 1.0)
        self.q_spin.setSingleStep(0.05)
        self.q_spin.setValue(0.1)
        self.run_button = QPushButton("Query")
        self.gallery = QListWidget()
        self.gallery.setViewMode(QListWidget.IconMode)
        self.gallery.setIconSize(QSize(72, 72))
        self.gallery.setMinimumHeight(170)
        self.status = QLabel("Alt+click the slide: nearest reference spots.")
        self.status.setWordWrap(True)
        self.bars = GeneBars()
        form = QFormLayout()
        form.addRow("SEAL run", self.run_edit)
        form.addRow("Store", self.store_edit)
        form.addRow("Query", self.query_edit)
        form.addRow("Route", self.route_combo)
        form.addRow("Outline top fraction", self.q_spin)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(QLabel("Top tiles (click to jump)"))
        layout.addWidget(self.gallery)
        layout.addWidget(self.status)
        layout.addWidget(self.bars)
        self.run_button.clicked.connect(self._on_query)
        observe_state(self, self.viewer, {"model": self.offer_run,
                                          "store": self.offer_store})
        self.query_edit.returnPressed.connect(self._on_query)
        self.gallery.itemClicked.connect(self._on_tile_clicked)
        self.viewer.mouse_drag_callbacks.append(self._on_canvas_click)

    def offer_run(self, run_dir) -> None:
        self.run_edit.setText(str(run_dir))

    def offer_store(self, store) -> None:
        self.store_edit.setText(str(store))

    def _sample_source(self):
        for layer in self.viewer.layers:
            meta = layer.metadata.get("napari_seal", {})
            if meta.get("kind") == "slide" and meta.get("source"):
                return meta["source"], meta.get("mpp")
        return None, None

    def _on_query(self) -> None:
        from napari_seal._widgets.view_jobs import iter_gene_query

        source, mpp = self._sample_source()
        run = self.run_edit.text().strip()
        store = self.store_edit.text().strip() or None
        if not source or not run:
            notify_error(SealError("load a slide and choose a SEAL run first"))
            return
        if self.job is not None and self.job.running:
            return
        # the slide layer may be removed before the result comes: keep what it was
        self._query_slide = (source, mpp)
        self.job = Job(iter_gene_query, source, run, self.query_edit.text(),
                       route=self.route_combo.currentText(), store=store,
                       top_q=self.q_spin.value(), description="Gene query",
                       on_done=self._on_result)
        self.job.start()

    def _on_result(self, out) -> None:
        from napari_seal.layers import query_layers

        result = out["result"]
        self.result = result
        _, mpp = self._query_slide
        for data, kwargs, layer_type in query_layers(result, top_q=self.q_spin.value(),
                                                     mpp=mpp):
            add_or_update_layer(self.viewer, data, kwargs, layer_type)
        self.top = out["top"]
        self.gallery.clear()
        if out["crops"] is None:
            notify_error(out["crops_error"])
            return
        for i, crop in enumerate(out["crops"]):
            item = QListWidgetItem(_icon(crop), f"{self.top.scores[i]:.2f}")
            item.setData(256, i)
            self.gallery.addItem(item)
        self.status.setText(f"{result.query.label}: {len(result.scores)} tiles scored "
                            f"({result.route} route)")

    def _on_tile_clicked(self, item) -> None:
        if self.top is None or self.result is None:
            return
        i = int(item.data(256))
        x, y = self.top.coords[i]
        size_l0 = float(self.result.grid.get("tile_size_l0", 0.0))
        mpp = self._query_slide[1] or 1.0
        from napari_seal._widgets._live import camera_of

        camera = camera_of(self.viewer)
        camera.center = ((y + size_l0 / 2) * mpp, (x + size_l0 / 2) * mpp)
        camera.zoom = max(camera.zoom, 2.0)

    def _on_canvas_click(self, viewer, event):
        mods = {m.name if hasattr(m, "name") else str(m) for m in event.modifiers}
        if "Alt" not in mods:
            return
        source, mpp = self._sample_source()
        run = self.run_edit.text().strip()
        if not source or not run or not mpp:
            return
        row, col = event.position[-2:]
        self.lookup_at((col / mpp, row / mpp))

    def lookup_at(self, xy) -> None:
        """Image -> expression: nearest reference spots to level-0 point ``xy``."""
        from napari_seal.retrieval.spot_lookup import lookup

        source, _ = self._sample_source()
        run = self.run_edit.text().strip()
        if not source or not run:
            notify_error(SealError("load a slide and choose a SEAL run first"))
            return
        if self.job is not None and self.job.running:
            return
        refs = [layer.metadata["napari_seal"]["source"] for layer in self.viewer.layers
                if layer.metadata.get("napari_seal", {}).get("kind") == "spots"
                and layer.metadata["napari_seal"].get("source")]
        self.job = Job(_lookup_gen, lookup, Path(source), Path(run),
                       xy, refs, description="Nearest spots", on_done=self._on_lookup)
        self.job.start()

    def _on_lookup(self, result) -> None:
        from napari_seal.layers import lookup_layer

        self.lookup_result = result
        positions, diameter = {}, 0.0
        for layer in self.viewer.layers:
            meta = layer.metadata.get("napari_seal", {})
            if meta.get("kind") != "spots" or "spot_id" not in layer.features:
                continue
            world = (np.asarray(layer.data, dtype=np.float64)[:, -2:]
                     * np.asarray(layer.scale)[-2:] + np.asarray(layer.translate)[-2:])
            ids = np.asarray(layer.features["spot_id"]).astype(str)
            positions[str(meta.get("sample"))] = dict(zip(ids, map(tuple, world),
                                                          strict=True))
            diameter = max(diameter, float(meta.get("spot_diameter_um") or 0.0))
        layer_data, missing = lookup_layer(result, positions, size_um=1.3 * diameter
                                           or 130.0)
        if layer_data is not None:
            add_or_update_layer(self.viewer, *layer_data)
        elif "nearest spots" in self.viewer.layers:
            self.viewer.layers.remove("nearest spots")
        # keys of napari_seal.retrieval.spot_lookup.iter_lookup's result
        enriched = result.get("expression", {}).get("enriched_genes", [])[:8]
        n = len(result.get("neighbours", []))
        self.bars.show_genes([(g["gene"], g["mean"], g["reference_mean"])
                              for g in enriched],
                             title=f"{n} nearest spots (bars) vs all (ticks), "
                                   "log1p CP10k")
        where = f"; {len(missing)} in samples not shown" if missing else ""
        names = ", ".join(str(g["gene"]) for g in enriched[:5])
        self.status.setText(f"{n} nearest spots, ringed on the slide{where}; most "
                            f"enriched: {names}")


def _lookup_gen(lookup, source, run, xy, refs):
    from napari_seal.progress import Progress

    yield Progress("lookup", 0, 1, "regions", "embedding the region")
    return lookup(source, run, at_xy=xy, references=refs or [source])
