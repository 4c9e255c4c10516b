"""npe2 sample data: the bundled her2st section (File > Open Sample)."""

from __future__ import annotations

from napari_seal.io.hest import bundled_sample_path, load_sample
from napari_seal.layers import sample_layers


def make_sample_data():
    """Return the slide and spot layers of the bundled her2st C2 section.

    The layers' ``source`` is the sample folder (as File > Open of that folder gives),
    so the docks compute on the sample, spots included, not on its bare slide file.
    """
    path = bundled_sample_path()
    sample = load_sample(path)
    sample.metadata.setdefault("path", str(path))
    return sample_layers(sample)
