"""Score-map highlighting: contours enclose exactly the top-q tiles; top-k; crops."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from napari_seal.errors import BadInputError
from napari_seal.retrieval.highlight import (
    ScoreImage,
    gallery_crops,
    top_fraction_contour,
    top_k_tiles,
)


def _inside(rings, points):
    """Even-odd rule over all rings."""
    count = np.zeros(len(points), int)
    for ring in rings:
        count += MplPath(ring).contains_points(points)
    return count % 2 == 1


def _pixel_centres_um(shape, scale, translate):
    rr, cc = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.column_stack(
        [translate[0] + rr.ravel() * scale[0], translate[1] + cc.ravel() * scale[1]]
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("q", [0.05, 0.2, 0.5])
def test_contour_encloses_exactly_the_top_q_tiles(seed, q):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(23, 31)).astype(np.float32)
    img[rng.random(img.shape) < 0.3] = np.nan  # off tissue, scattered
    scale, translate = (56.0, 56.0), (28.0, 28.0)
    cont = top_fraction_contour(ScoreImage(img, scale, translate), q, mpp=0.5)
    tissue = np.isfinite(img)
    k = math.ceil(q * tissue.sum())
    assert cont.n_selected == k
    want = np.zeros(img.shape, bool)
    flat = np.flatnonzero(tissue)
    want.ravel()[flat[np.argsort(-img.ravel()[flat], kind="stable")[:k]]] = True
    np.testing.assert_array_equal(cont.mask, want)
    assert cont.threshold == pytest.approx(np.sort(img[tissue])[::-1][k - 1])
    inside = _inside(cont.rings_um, _pixel_centres_um(img.shape, scale, translate))
    np.testing.assert_array_equal(inside.reshape(img.shape), want)
    # level-0 pixel rings are the same polygons: (row, col) um -> (x, y) px
    for um, px in zip(cont.rings_um, cont.rings_px, strict=True):
        np.testing.assert_allclose(px, um[:, ::-1] / 0.5)


def test_contour_holes_and_diagonal_touching():
    img = np.zeros((6, 6), np.float32)
    img[1:5, 1:5] = 1.0
    img[2, 2] = 0.0  # a hole
    cont = top_fraction_contour(img, threshold=0.5)
    assert cont.n_selected == 15
    assert sorted(cont.holes) == [False, True]
    inside = _inside(cont.rings_um, _pixel_centres_um(img.shape, (1, 1), (0, 0)))
    np.testing.assert_array_equal(inside.reshape(img.shape), img > 0.5)
    diag = np.zeros((4, 4), np.float32)
    diag[0, 0] = diag[1, 1] = 1.0
    cont = top_fraction_contour(diag, threshold=1.0)
    assert len(cont.rings_um) == 2  # two separate squares, not one figure eight
    assert all(len(r) == 4 for r in cont.rings_um)
    # one cell's ring runs along its edges: pixel (1, 1) spans 0.5..1.5
    assert {tuple(v) for v in cont.rings_um[1]} == {
        (0.5, 0.5),
        (0.5, 1.5),
        (1.5, 1.5),
        (1.5, 0.5),
    }


def test_contour_bad_input():
    with pytest.raises(BadInputError, match=r"q=0 must be in \(0, 1\]"):
        top_fraction_contour(np.zeros((3, 3)), 0)
    with pytest.raises(BadInputError, match="must be 2-D"):
        top_fraction_contour(np.zeros(3), 0.1)
    with pytest.raises(BadInputError, match="finite number"):
        top_fraction_contour(np.zeros((3, 3)), threshold=float("nan"))


def test_top_k_tiles_order_nan_and_ties():
    scores = np.array([0.1, np.nan, 0.9, 0.5, 0.9, -1.0])
    ids = np.array([10, 11, 12, 13, 14, 15])
    coords = np.arange(12).reshape(6, 2)
    top = top_k_tiles(scores, 3, tile_ids=ids, coords=coords)
    assert top.tile_ids.tolist() == [12, 14, 13]  # tie keeps tile order; NaN skipped
    np.testing.assert_array_equal(top.coords, coords[[2, 4, 3]])
    np.testing.assert_allclose(top.scores, [0.9, 0.9, 0.5])
    assert len(top_k_tiles(scores, 50, tile_ids=ids)) == 5
    with pytest.raises(BadInputError):
        top_k_tiles(scores, 0)


def test_gallery_crops_read_the_tiles():
    from test_retrieval_helpers import hand_grid, he_image

    from napari_seal.io.slide.core import Slide
    from napari_seal.tiling.grid import read_tiles

    img = he_image(256, 320)
    slide = Slide.from_array(img, mpp=1.0)
    grid = hand_grid(4, 5, tile_px=64, mpp=1.0, slide_mpp=1.0)
    crops = gallery_crops(slide, grid, np.array([7, 0]))
    np.testing.assert_array_equal(crops, read_tiles(slide, grid, np.array([7, 0])))
    # tile 7 = row 1, col 2 -> pixels y 64..128, x 128..192 of the image
    np.testing.assert_array_equal(crops[0], img[64:128, 128:192])
    # from the grid dict alone (as saved in a query result)
    np.testing.assert_array_equal(gallery_crops(slide, grid.to_dict(), [7]), crops[:1])
    with pytest.raises(BadInputError, match="not tissue tiles"):
        gallery_crops(slide, grid, np.array([999]))
