"""npe2 reader: File > Open on a slide, an ``.h5ad``, a Space Ranger or HEST folder.

Returns layer data in micrometres (see :mod:`napari_seal.layers`). Paths this plugin
does not handle get ``None`` at once (no pixels are decoded to decide). A path we
handle but cannot read shows a napari notification with the fix-it message and
opens nothing; the reader never raises into napari.
"""

from __future__ import annotations

import logging
from pathlib import Path

from napari_seal.errors import SealError
from napari_seal.io.sniff import sniff

logger = logging.getLogger(__name__)


def napari_get_reader(path):
    """Return a reader function for ``path``, or ``None`` when it is not ours."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        kind = sniff(path)
    except OSError:
        return None
    if kind is None:
        return None
    return read_path


def read_path(path, **_kwargs):
    """Read ``path`` into napari layer data tuples."""
    from napari_seal.io.open import open_path
    from napari_seal.io.sample import SpatialSample
    from napari_seal.layers import sample_layers, slide_layer

    if isinstance(path, list | tuple):
        path = path[0]
    try:
        obj = open_path(Path(path))
        if isinstance(obj, SpatialSample):
            return sample_layers(obj)
        return [slide_layer(obj)]
    except SealError as err:
        _notify(f"napari-seal could not open {Path(path).name}: {err}")
        return [(None,)]


def _notify(message: str) -> None:
    logger.warning(message)
    try:
        from napari.utils.notifications import show_error
    except ImportError:  # pragma: no cover - napari is a dependency
        return
    show_error(message)
