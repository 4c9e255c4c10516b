"""Explore dock: from an open slide to its predicted expression in one panel.

It follows the viewer's layers (the slide shown is the slide used), starts with the
model that ships with napari-seal, offers the model's genes as you type, and paints
the gene where the camera looks first (a :class:`~napari_seal._widgets._live.
LiveOverlayView`: tiles in view are embedded in a worker, written through into the
workspace store that ``embed``/``predict``/``query`` reuse). Another gene with the same
model repaints at once from what is already computed. What it uses and produces goes
into the viewer's shared :class:`~napari_seal.state.ExploreState`.
"""

import difflib
import os
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QCompleter,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_seal._widgets._common import notify_error, source_layers
from napari_seal._widgets._state import observe_state, publish
from napari_seal.errors import BadInputError

#: what is painted: None = predicted expression, else the gene-query route's score
PAINTS = {"predicted expression": None, "query score (omics)": "omics",
          "query score (decoder)": "decoder"}
CHOOSE = "__choose__"


class ExploreWidget(QWidget):
    """Model, gene (type-ahead), what to paint, colormap, workspace; painted lazily."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        from napari_seal._widgets.jobs import warm_imports

        warm_imports("embed")  # the worker's imports, here (GIL; see jobs.warm_imports)
        warm_imports("query")
        self.live = None
        self.head = None
        self._live_key = None
        self.slide_label = QLabel()
        self.slide_label.setWordWrap(True)
        self.model_combo = QComboBox()
        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.gene_edit = QLineEdit()
        self.gene_edit.setPlaceholderText("type a gene, e.g. ERBB2, and press Enter")
        self.paint_combo = QComboBox()
        self.paint_combo.addItems(list(PAINTS))
        self.cmap_combo = QComboBox()
        self.cmap_combo.addItems(["magma", "viridis", "inferno", "turbo", "plasma"])
        self.workspace_label = QLabel()
        self.workspace_label.setWordWrap(True)
        self.workspace_button = QPushButton("Change...")
        self.show_button = QPushButton("Show")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Slide", self.slide_label)
        form.addRow("Model", self.model_combo)
        form.addRow(self.model_info)
        form.addRow("Gene", self.gene_edit)
        form.addRow("Paint", self.paint_combo)
        form.addRow("Colormap", self.cmap_combo)
        ws = QHBoxLayout()
        ws.addWidget(self.workspace_label, 1)
        ws.addWidget(self.workspace_button)
        form.addRow("Workspace", ws)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.show_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._fill_models()
        self._show_workspace()
        self._follow_slide()
        self.viewer.layers.events.inserted.connect(self._follow_slide)
        self.viewer.layers.events.removed.connect(self._follow_slide)
        self.model_combo.currentIndexChanged.connect(self._on_model)
        self.gene_edit.returnPressed.connect(self.show_gene)
        self.show_button.clicked.connect(self.show_gene)
        self.cmap_combo.currentTextChanged.connect(self._on_colormap)
        self.workspace_button.clicked.connect(self._choose_workspace)
        observe_state(self, self.viewer, {"model": self.offer_model})
        self._on_model()

    # -- inputs ----------------------------------------------------------------
    def _fill_models(self) -> None:
        from napari_seal.errors import ShippedModelError

        try:
            from napari_seal.models.shipped import SHIPPED_MODEL, shipped_run_path

            self.model_combo.addItem(f"shipped: {SHIPPED_MODEL}", str(shipped_run_path()))
        except ShippedModelError as err:
            self.status.setText(f"No shipped model ({err}); choose a SEAL run folder.")
        self.model_combo.addItem("Choose a SEAL run folder...", CHOOSE)

    def offer_model(self, run_dir) -> None:
        """Use the SEAL run ``run_dir`` (e.g. the Fine-tune dock's finished run)."""
        run_dir = str(run_dir)
        idx = self.model_combo.findData(run_dir)
        if idx < 0:
            self.model_combo.insertItem(self.model_combo.count() - 1,
                                        f"run: {Path(run_dir).name}", run_dir)
            idx = self.model_combo.findData(run_dir)
        self.model_combo.setCurrentIndex(idx)

    def model_path(self) -> str | None:
        data = self.model_combo.currentData()
        return None if data in (None, CHOOSE) else str(data)

    def _on_model(self, *_args) -> None:
        if self.model_combo.currentData() == CHOOSE:
            folder = QFileDialog.getExistingDirectory(self, "A SEAL run folder")
            if folder:
                self.offer_model(folder)
            else:
                self.model_combo.setCurrentIndex(0)
            return
        path = self.model_path()
        if path is None:
            return
        from napari_seal.predict.heads import head_from_run_dir

        head = head_from_run_dir(Path(path))  # numpy only: a few ms
        if head is None:
            notify_error(BadInputError(f"{path} is not a finished SEAL run (no DONE, "
                                       "panel.json or heads.safetensors)"))
            return
        self.head = head
        completer = QCompleter(list(head.genes), self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.gene_edit.setCompleter(completer)
        self.model_info.setText(_model_text(path, len(head.genes)))
        publish(self.viewer, model=path)

    def slide(self) -> tuple[str | None, str | None]:
        """``(source path, layer name)`` of the slide shown (the top-most one)."""
        layers = source_layers(self.viewer)
        return (layers[-1][1], layers[-1][0]) if layers else (None, None)

    def _follow_slide(self, *_args) -> None:
        source, name = self.slide()
        self.slide_label.setText(name or "none: File > Open Sample > napari-seal, or "
                                 "File > Open a slide or sample folder")
        publish(self.viewer, slide=source, slide_name=name)

    def _show_workspace(self) -> None:
        from napari_seal.io.workspace import workspace_root

        root = workspace_root()
        self.workspace_label.setText(str(root))
        publish(self.viewer, workspace=str(root))

    def _choose_workspace(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Workspace folder")
        if folder:
            os.environ["NAPARI_SEAL_CACHE"] = str(Path(folder).resolve())
            self._show_workspace()

    def _on_colormap(self, name: str) -> None:
        if self.live is not None and self.live.layer in self.viewer.layers:
            self.live.layer.colormap = name

    # -- painting --------------------------------------------------------------
    def gene(self) -> str:
        """The typed gene, spelled as in the model's panel (case-insensitive)."""
        text = self.gene_edit.text().strip()
        if not text:
            raise BadInputError("type a gene first (e.g. ERBB2)")
        by_upper = {g.upper(): g for g in self.head.genes}
        if text.upper() in by_upper:
            return by_upper[text.upper()]
        near = difflib.get_close_matches(text.upper(), list(by_upper), n=3)
        hint = f"; nearest: {', '.join(by_upper[n] for n in near)}" if near else ""
        msg = f"{text!r} is not in this model's {len(self.head.genes)}-gene panel{hint}"
        raise BadInputError(msg)

    def show_gene(self) -> None:
        """Paint the typed gene where the camera looks (another gene: at once)."""
        try:
            source, _ = self.slide()
            if source is None:
                raise BadInputError("open a slide first (File > Open Sample > napari-seal)")
            if self.head is None:
                raise BadInputError("choose a model first")
            gene, route = self.gene(), PAINTS[self.paint_combo.currentText()]
        except BadInputError as err:
            notify_error(err)
            return
        name = gene if route is None else f"{gene} ({route} score)"
        key = (source, self.model_path(), route)
        publish(self.viewer, gene=gene, route=route or "expression")
        if (route is None and self._live_key == key and self.live is not None
                and self.live.running and self.live.overlay is not None):
            self.live.set_gene(gene, name=name)
            self.status.setText(f"{gene}: repainting from the tiles already computed")
            return
        self._start(source, gene, route, name, key)

    def _start(self, source, gene, route, name, key) -> None:
        from napari_seal._widgets._live import LiveOverlayView

        if self.live is not None:
            self.live.cancel()
            if self.live.layer in self.viewer.layers:
                self.viewer.layers.remove(self.live.layer)
        model = self.model_path()

        def make():
            from napari_seal.embedding.on_demand import OnDemandEmbedder
            from napari_seal.predict.expression import expression_head
            from napari_seal.predict.live import LiveOverlay
            from napari_seal.retrieval.score_head import ScoreHead
            from napari_seal.training.runs import load_run

            run = load_run(model)
            engine = OnDemandEmbedder(Path(source), run, None)
            head = expression_head(run) if route is None else ScoreHead(run, gene, route)
            return engine, LiveOverlay(engine.grid, head,
                                       gene if route is None else head.genes[0])

        self._live_key = key
        self.live = LiveOverlayView(self.viewer, make, name=name,
                                    colormap=self.cmap_combo.currentText(),
                                    on_update=self._on_update)
        self.live.start()
        self.status.setText(f"{name}: loading the model and the tissue mask")

    def adopt(self, live, *, model: str, gene: str | None, route: str | None) -> None:
        """Show and steer a live view started elsewhere (``napari-seal view``)."""
        self.offer_model(model)
        if gene:
            self.gene_edit.setText(gene)
        label = next((k for k, v in PAINTS.items() if v == route), None)
        if label is not None:
            self.paint_combo.setCurrentText(label)
        source, _ = self.slide()
        self.live, self._live_key = live, (source, self.model_path(), route)
        live.add_update_listener(self._on_update)

    def _on_update(self, update) -> None:
        state = "complete" if update.view_complete else (
            "preview" if update.preview else "computing")
        self.status.setText(f"{self.live.name}: {update.view_done}/{update.view_total} "
                            f"tiles in view ({state}); {update.tiles_computed} computed "
                            "by the encoder this time")
        if self.live.engine is not None:
            publish(self.viewer, store=str(self.live.engine.store_path))


def _model_text(path: str, n_genes: int) -> str:
    from napari_seal.errors import ShippedModelError
    from napari_seal.models.shipped import shipped_model_summary, shipped_run_path

    try:
        if Path(path).resolve() == shipped_run_path().resolve():
            return shipped_model_summary()
    except ShippedModelError:
        pass
    return f"SEAL run {path} ({n_genes} genes)"
