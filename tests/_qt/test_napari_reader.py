"""The npe2 reader and sample data in a real viewer under Xvfb, checked on pixels."""

from __future__ import annotations

import numpy as np
import pytest
from napari_helpers import export_with_extent, is_tissue, world_to_pixel

from napari_seal._reader import napari_get_reader
from napari_seal.io.hest import bundled_sample_path


def test_reader_refuses_foreign_paths(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    assert napari_get_reader(str(other)) is None
    assert napari_get_reader(str(tmp_path)) is None
    fake = tmp_path / "fake.tif"
    fake.write_bytes(b"not a tiff at all")
    assert napari_get_reader(str(fake)) is None


def test_reader_bad_file_notifies_and_opens_nothing(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x00" * 64)
    reader = napari_get_reader(str(bad))
    assert reader is not None
    before = bad.read_bytes()
    assert reader(str(bad)) == [(None,)]
    assert bad.read_bytes() == before


def test_bundled_sample_layers_share_world_extent():
    reader = napari_get_reader(str(bundled_sample_path()))
    layers = reader(str(bundled_sample_path()))
    (img, img_kw, img_type), (pts, pts_kw, pts_type) = layers
    assert (img_type, pts_type) == ("image", "points")
    mpp = img_kw["scale"][0]
    assert 0.67 < mpp < 0.71
    assert img_kw["rgb"]
    assert img_kw["multiscale"]
    height_um = img[0].shape[0] * mpp
    width_um = img[0].shape[1] * mpp
    assert pts.min() > 0
    assert pts[:, 0].max() < height_um
    assert pts[:, 1].max() < width_um
    assert pts_kw["size"] == pytest.approx(100.0)


def test_spots_render_on_tissue(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(bundled_sample_path()), plugin="napari-seal")
    image, points = layers
    np.testing.assert_allclose(image.scale[-2:], [image.scale[-1]] * 2)
    # slide and spots in one world: spots inside the slide's world extent
    assert np.all(points.extent.world[0][-2:] >= image.extent.world[0][-2:] - 1)
    assert np.all(points.extent.world[1][-2:] <= image.extent.world[1][-2:] + 1)

    points.visible = False
    img, extent = export_with_extent(viewer, [image])
    rows, cols = world_to_pixel(points.data[:, -2:], img, extent)
    on_tissue = is_tissue(img[rows, cols])
    assert on_tissue.mean() > 0.85, on_tissue.mean()
    # the frame corners are background: the test can tell tissue from glass
    corners = img[[2, 2, -3, -3], [2, -3, 2, -3]]
    assert not is_tissue(corners).all()

    points.visible = True
    points.face_color = "yellow"
    points.refresh()
    img2, extent2 = export_with_extent(viewer, [image])
    rows2, cols2 = world_to_pixel(points.data[:, -2:], img2, extent2)
    px = img2[rows2, cols2, :3].astype(int)
    yellowish = (px[:, 0] > 150) & (px[:, 1] > 150) & (px[:, 2] < 150)
    assert yellowish.mean() > 0.85
    from PIL import Image

    Image.fromarray(img2).save(tmp_path / "spots.png")
