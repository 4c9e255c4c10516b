"""The Embed dock with no store path writes to the workspace, never into the package.

The bundled sample lives inside the installed package: the old default store path
(``<slide>.embeddings.zarr`` beside it) wrote into ``src/napari_seal/data``.
"""

from __future__ import annotations

import time
from pathlib import Path

import napari_seal

PACKAGE_DATA = Path(napari_seal.__file__).parent / "data"


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    }


def _wait(widget, timeout_s: float = 300.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout_s
    while widget.job is not None and widget.job.running:
        assert time.monotonic() < end, f"{type(widget).__name__} job still running"
        QApplication.processEvents()
        time.sleep(0.01)


def test_embed_dock_default_store_is_in_the_workspace(
    make_napari_viewer, monkeypatch, tmp_path
):
    from napari_seal._widgets._embed import EmbedWidget
    from napari_seal._widgets._load import LoadWidget
    from napari_seal.predict.expression import open_store

    ws = tmp_path / "ws"
    monkeypatch.setenv("NAPARI_SEAL_CACHE", str(ws))
    viewer = make_napari_viewer()
    load = LoadWidget(viewer)
    load.bundled_button.click()
    _wait(load)
    before = _snapshot(PACKAGE_DATA)
    embed = EmbedWidget(viewer)
    assert embed.source_combo.count() == 1
    assert embed.store_edit.text() == ""  # no path inside the package is offered
    assert str(ws) in embed.store_edit.placeholderText()
    index = embed.encoder_combo.findData("test-vit")
    embed.encoder_combo.setCurrentIndex(index)
    embed.run_button.click()
    _wait(embed)
    assert embed.job.error is None
    stores = list((ws / "stores").glob("her2st_C2-*.zarr"))
    assert len(stores) == 1
    assert embed.store == stores[0]
    assert open_store(stores[0]).n_tiles > 100
    assert _snapshot(PACKAGE_DATA) == before  # nothing written into the package
