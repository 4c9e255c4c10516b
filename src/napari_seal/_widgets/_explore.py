"""Explore dock: from an open slide to its predicted expression in one panel.

Follows the layers (the slide shown is the one used), starts with the shipped model,
completes genes as you type and paints where the camera looks first (``LiveOverlayView``
writing through into the workspace store that ``embed``/``predict``/``query`` reuse);
another gene repaints from what is computed. Shares its values via ``ExploreState``.
"""

from pathlib import Path

from qtpy.QtCore import Qt, QTimer
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

from napari_seal._widgets._choosers import ModelChoice, WorkspaceRow
from napari_seal._widgets._common import Job, notify_error, source_layers
from napari_seal._widgets._live import LiveOverlayView
from napari_seal._widgets._reliability import LIVE_UNCERTAINTY, ReliabilityControls
from napari_seal._widgets._state import observe_state, publish
from napari_seal._widgets.live_jobs import (
    EncoderWithHead,
    live_maker,
    prepare_live,
    start_early,
)
from napari_seal._widgets.view_jobs import iter_compare_at_spots
from napari_seal.errors import BadInputError, SealError
from napari_seal.models.shipped import model_summary
from napari_seal.predict.expression import expression_head
from napari_seal.predict.heads import head_from_run_dir, match_gene

#: what is painted: None = predicted expression, else the gene-query route's score
PAINTS = {"predicted expression": None, "query score (omics)": "omics",
          "query score (decoder)": "decoder"}


class ExploreWidget(QWidget):
    """Model, gene (type-ahead), what to paint, colormap, workspace; painted lazily."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        from napari_seal._widgets.jobs import warm_imports

        for kind in ("embed", "query"):  # the worker's imports, here (GIL; see there)
            warm_imports(kind)
        self.live = self.head = self._live_key = self._prepared = None  # see _prepare
        self.slide_label, self.status, self.compare_label = QLabel(), QLabel(), QLabel()
        self.slide_label.setWordWrap(True)
        self.models = ModelChoice()
        self.model_combo, self.model_info = self.models.combo, self.models.info
        self.gene_edit = QLineEdit()
        self.gene_edit.setPlaceholderText("type a gene, e.g. ERBB2, and press Enter")
        self.paint_combo, self.cmap_combo = QComboBox(), QComboBox()
        self.paint_combo.addItems(list(PAINTS))
        self.cmap_combo.addItems(["magma", "viridis", "inferno", "turbo", "plasma"])
        self.workspace = WorkspaceRow()
        self.compare_check = QCheckBox("measured vs predicted at spots")
        self.compare_check.setChecked(True)
        self.reliability = ReliabilityControls()
        self.compare = self._compare_job = self._compared = None  # the last comparison
        self.show_button = QPushButton("Show")
        self.status.setWordWrap(True)
        form = QFormLayout()
        for label, field in (("Slide", self.slide_label), ("Model", self.models),
                             ("Gene", self.gene_edit), ("Paint", self.paint_combo),
                             ("Colormap", self.cmap_combo),
                             ("Workspace", self.workspace), ("", self.compare_check),
                             ("Reliability", self.reliability)):
            form.addRow(label, field)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for widget in (self.show_button, self.status, self.compare_label):
            layout.addWidget(widget)
        layout.addStretch(1)
        self.status.setText(self.models.problem)
        publish(self.viewer, workspace=self.workspace.refresh())
        self._follow_slide()
        self.viewer.layers.events.inserted.connect(self._follow_slide)
        self.viewer.layers.events.removed.connect(self._follow_slide)
        self.models.chosen.connect(self._on_model)
        self.gene_edit.returnPressed.connect(self.show_gene)
        self.show_button.clicked.connect(self.show_gene)
        self.cmap_combo.currentTextChanged.connect(self._on_colormap)
        self.workspace.changed.connect(self._on_workspace)
        self.reliability.changed.connect(self._on_reliability)
        observe_state(self, self.viewer, {"model": self.offer_model})
        self.models.emit_current()

    def offer_model(self, model) -> None:
        """Use a SEAL run folder (e.g. a finished fine-tune) or ``EncoderWithHead``."""
        self.models.offer(model)

    def model_path(self) -> str | EncoderWithHead | None:
        return self.models.current()

    def _on_model(self, path: str | EncoderWithHead) -> None:
        if isinstance(path, EncoderWithHead):  # not a run: no map, no query scores
            try:
                self._use_head(expression_head(path.head), f"{path.label}: predicted "
                               "expression only (no reliability map, no query scores)")
            except SealError as err:
                self.models.reject(path, err)
            return
        head = head_from_run_dir(Path(path))  # numpy only: a few ms
        if head is None:
            why = f"{path} is not a finished SEAL run (no DONE, panel.json or heads)"
            self.models.reject(path, BadInputError(why))
            return
        from napari_seal.training.reference_bank import BANK

        self._use_head(head, model_summary(path, len(head.genes)),
                       reliability=(Path(path) / BANK).is_file())
        publish(self.viewer, model=path)

    def _use_head(self, head, info: str, *, reliability: bool = False) -> None:
        self.head = head
        completer = QCompleter(list(head.genes), self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.gene_edit.setCompleter(completer)
        self.model_info.setText(info)
        self.reliability.set_available(available=reliability)
        QTimer.singleShot(0, self._prepare)

    def slide(self) -> tuple[str | None, str | None]:
        """``(source path, layer name)`` of the slide shown (the top-most one)."""
        layers = source_layers(self.viewer)
        return (layers[-1][1], layers[-1][0]) if layers else (None, None)

    def _follow_slide(self, *_args) -> None:
        source, name = self.slide()
        self.slide_label.setText(name or "none: File > Open Sample > napari-seal, or "
                                 "File > Open a slide or sample folder")
        publish(self.viewer, slide=source, slide_name=name)
        QTimer.singleShot(0, self._prepare)

    def _prepare(self) -> None:
        """Load the model, find the tissue while the gene is typed (~1.4 s here)."""
        key = (self.slide()[0], self.model_path())
        shown = self._live_key is not None and self._live_key[:2] == key  # running
        if (None in key or shown or self.viewer.window is None
                or (self._prepared is not None and self._prepared[0] == key)):
            return
        self._prepared = (key, start_early(prepare_live, *key))

    def _on_workspace(self, root: str) -> None:
        self._prepared = None  # its store would be in the old workspace
        publish(self.viewer, workspace=root)

    def _on_reliability(self) -> None:
        if self.live is not None:
            self.live.set_reliability(self.reliability.max_uncertainty,
                                      show=self.reliability.show)

    def _on_colormap(self, name: str) -> None:
        if self.live is not None and self.live.layer in self.viewer.layers:
            self.live.layer.colormap = name

    def show_gene(self) -> None:
        """Paint the typed gene where the camera looks (another gene: at once)."""
        try:
            source, _ = self.slide()
            if source is None or self.head is None:
                msg = ("open a slide first (File > Open Sample > napari-seal)"
                       if source is None else "choose a model first")
                raise BadInputError(msg)
            gene = match_gene(self.head.genes, self.gene_edit.text())
            route = PAINTS[self.paint_combo.currentText()]
            if route is not None and isinstance(self.model_path(), EncoderWithHead):
                msg = "query scores need a SEAL run, not a saved head"
                raise BadInputError(msg)
        except SealError as err:
            notify_error(err)
            return
        name = gene if route is None else f"{gene} ({route} score)"
        key = (source, self.model_path(), route)
        publish(self.viewer, gene=gene, route=route or "expression")
        self.compare_label.setText("")
        if (route is None and self._live_key == key and self.live is not None
                and self.live.running and self.live.overlay is not None):
            self.live.set_gene(gene, name=name)
            self.status.setText(f"{gene}: repainting from the tiles already computed")
            return
        self._start(source, gene, route, name, key)

    def _start(self, source, gene, route, name, key) -> None:
        if self.live is not None:
            self.live.cancel()
            for layer in (self.live.layer, LIVE_UNCERTAINTY):
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
        pre, self._prepared, self._live_key = self._prepared, None, key  # one use only
        make = live_maker(source, self.model_path(), gene, route,
                          prepared=pre[1] if pre and pre[0] == key[:2] else None)
        self.live = LiveOverlayView(self.viewer, make, name=name,
                                    colormap=self.cmap_combo.currentText(),
                                    on_update=self._on_update)
        self._on_reliability()
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
        self.live, self._live_key = live, (self.slide()[0], self.model_path(), route)
        live.add_update_listener(self._on_update, owner=self)
        self._on_reliability()

    def _on_update(self, update) -> None:
        state = ("complete" if update.view_complete else "preview" if update.preview
                 else "computing")
        hidden = f"; {self.live.hidden} unreliable hidden" if self.live.hidden else ""
        self.status.setText(f"{self.live.name}: {update.view_done}/{update.view_total} "
                            f"tiles in view ({state}); {update.tiles_computed} "
                            f"computed by the encoder this time{hidden}")
        if self.live.engine is None:
            return
        store = str(self.live.engine.store_path)
        publish(self.viewer, store=store)
        gene = self.live.layer.metadata.get("napari_seal", {}).get("gene")
        busy = self._compare_job is not None and self._compare_job.running
        if (update.view_complete and self._live_key[2] is None and not busy
                and self.compare_check.isChecked() and self._compared != (gene, store)):
            self._compared = (gene, store)
            model = getattr(self.model_path(), "head", self.model_path())
            self._compare_job = Job(iter_compare_at_spots, self._live_key[0], store,
                                    model, gene, on_done=self._on_compare,
                                    description="Measured vs predicted")
            self._compare_job.start()

    def _on_compare(self, res) -> None:
        self.compare = res
        if res is not None:
            self.compare_label.setText(f"measured vs predicted {res['gene']} at "
                                       f"{res['n_spots']} spots: r = {res['r']:.2f}")

