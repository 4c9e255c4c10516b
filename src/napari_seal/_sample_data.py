"""npe2 sample data: the bundled her2st section (File > Open Sample)."""

from __future__ import annotations

from napari_seal.io.hest import bundled_sample_path, load_sample
from napari_seal.layers import sample_layers


def make_sample_data():
    """Return the slide and spot layers of the bundled her2st C2 section."""
    return sample_layers(load_sample(bundled_sample_path()))
