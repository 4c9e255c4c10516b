"""Tissue mask, tile grid with stable ids, tile and spot-patch reading (issue 4)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from napari_seal.errors import BadInputError, EncoderMismatchError, NoTissueError
from napari_seal.io.sample import SpatialSample
from napari_seal.io.slide.core import Slide, open_slide
from napari_seal.io.slide.source import block_mean
from napari_seal.testing import (
    BACKGROUND_RGB,
    synthetic_he_image,
    write_synthetic_slide,
)
from napari_seal.tiling.grid import (
    TileGrid,
    TilingConfig,
    make_tile_grid,
    read_tiles,
    spot_patches,
)
from napari_seal.tiling.tissue import otsu_threshold, tissue_mask


def _shared_data_dir() -> Path | None:
    env = os.environ.get("NAPARI_SEAL_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return root if root.is_dir() else None


@pytest.fixture(scope="module")
def her2st():
    """her2st section C2 and its spots (pyramid cached in the session's slide cache)."""
    import pandas as pd

    root = _shared_data_dir()
    base = None if root is None else root / "her2st" / "data"
    if base is None or not (base / "ST-imgs/C/C2/5714_HE_BT_C2.jpg").is_file():
        pytest.skip("her2st data not found (set NAPARI_SEAL_SHARED_DATA)")
    # default cache dir: $NAPARI_SEAL_CACHE, a session temp folder (tests/conftest.py)
    slide = open_slide(base / "ST-imgs/C/C2/5714_HE_BT_C2.jpg")
    spots = pd.read_csv(base / "ST-spotfiles/C2_selection.tsv", sep="\t")
    spots = spots[spots["selected"] == 1]
    return slide, spots[["pixel_x", "pixel_y"]].to_numpy(np.float64)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A 1024 x 768 synthetic H&E slide at 0.5 um/px plus its ground-truth tissue."""
    path = tmp_path_factory.mktemp("synth") / "s.tif"
    write_synthetic_slide(
        path, width_px=1024, height_px=768, mpp=0.5, tile_px=256, seed=2
    )
    image = synthetic_he_image(768, 1024, seed=2)
    truth = np.abs(image.astype(int) - np.array(BACKGROUND_RGB)).max(axis=-1) > 30
    return open_slide(path), image, truth


def test_tiling_config_validates_and_round_trips():
    cfg = TilingConfig(tile_px=256, mpp=0.25, stride_px=128, tissue_threshold=0.1)
    assert TilingConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.stride == 128
    assert TilingConfig().stride == 224
    with pytest.raises(AttributeError):
        cfg.tile_px = 3  # frozen
    for bad in (
        {"tile_px": 0},
        {"tile_px": 2.5},
        {"mpp": -1.0},
        {"stride_px": 0},
        {"tissue_threshold": 1.5},
        {"min_tissue_fraction": -0.1},
        {"mask_max_px": 10},
    ):
        with pytest.raises(BadInputError, match="invalid tiling configuration"):
            TilingConfig(**bad)
    with pytest.raises(BadInputError, match="unknown tiling configuration keys"):
        TilingConfig.from_dict({"tile_size": 3})


def test_otsu_threshold_splits_two_populations():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [rng.normal(0.05, 0.02, 5000), rng.normal(0.45, 0.05, 2000)]
    )
    thr = otsu_threshold(np.clip(values, 0, 1))
    assert 0.1 < thr < 0.35
    assert (values[:5000] < thr).mean() > 0.99
    assert (values[5000:] > thr).mean() > 0.99


def test_tissue_mask_matches_synthetic_ground_truth(synth):
    slide, _, truth = synth
    mask = tissue_mask(slide, config=TilingConfig(mask_max_px=512))
    assert mask.mask.shape == (384, 512)
    assert mask.downsample == pytest.approx(2.0)
    assert mask.method == "otsu"
    small_truth = (
        block_mean(np.repeat(truth[..., None], 3, -1).astype(np.uint8) * 255, 2)[..., 0]
        > 127
    )
    iou = (mask.mask & small_truth).sum() / (mask.mask | small_truth).sum()
    assert iou > 0.9
    # a user threshold overrides Otsu; above every saturation it finds nothing
    none = tissue_mask(
        slide, config=TilingConfig(mask_max_px=512, tissue_threshold=0.99)
    )
    assert none.method == "user"
    assert not none.mask.any()


def test_tile_grid_ids_are_stable_and_unique(synth):
    slide, _, truth = synth
    grid = make_tile_grid(slide)  # 224 px at 0.5 um/px on a 0.5 um/px slide
    assert grid.tile_size_l0 == 224
    assert grid.stride_l0 == 224
    # just enough tiles to reach the right/bottom edge: ceil((1024 - 224) / 224) + 1
    assert (grid.n_rows, grid.n_cols) == (4, 5)
    ids = grid.tile_ids
    assert ids.dtype == np.int64
    assert np.all(np.diff(ids) > 0)
    rows, cols = grid.rows_cols().T
    np.testing.assert_array_equal(ids, rows * grid.n_cols + cols)
    np.testing.assert_array_equal(
        grid.coords, np.stack([cols * 224, rows * 224], axis=1)
    )
    # tissue tiles are those with enough tissue in the ground truth
    for (x, y), frac in zip(grid.coords, grid.tissue_fraction, strict=True):
        assert truth[y : y + 224, x : x + 224].mean() > 0.05
        assert frac >= 0.1
    # ids do not depend on the mask: the full grid holds the same ids at the same place
    full = make_tile_grid(slide, config=TilingConfig(min_tissue_fraction=0.0))
    np.testing.assert_array_equal(full.tile_ids, np.arange(20))
    np.testing.assert_array_equal(full.coords[full.index_of(ids)], grid.coords)
    strict = make_tile_grid(slide, config=TilingConfig(min_tissue_fraction=0.9))
    assert set(strict.tile_ids) < set(ids)
    np.testing.assert_array_equal(full.index_of(np.array([3, 99])), [3, -1])


def test_stride_halves_the_spacing(synth):
    slide, _, _ = synth
    grid = make_tile_grid(slide, config=TilingConfig(min_tissue_fraction=0.0))
    half = make_tile_grid(
        slide, config=TilingConfig(stride_px=112, min_tissue_fraction=0.0)
    )
    assert half.stride_l0 == grid.stride_l0 / 2
    assert half.tile_size_l0 == grid.tile_size_l0
    # just enough tiles to reach the edges: ceil((1024 - 224) / 112) + 1, (768 ...)
    assert (half.n_rows, half.n_cols) == (6, 9)
    assert half.n_tiles == 54
    assert half.scale_um == (56.0, 56.0)
    assert grid.scale_um == (112.0, 112.0)
    # every other tile of the fine grid is a tile of the coarse grid
    r, c = 2, 3
    fine = half.tile_ids == (2 * r) * half.n_cols + 2 * c
    coarse = grid.tile_ids == r * grid.n_cols + c
    np.testing.assert_allclose(half.centres_xy[fine], grid.centres_xy[coarse])


def test_overlay_geometry_puts_pixels_on_tile_centres(synth):
    slide, _, _ = synth
    grid = make_tile_grid(slide.with_mpp(0.69, source="user"))  # non-integer tile size
    rows, cols = grid.rows_cols().T
    world_rc = np.array(grid.translate_um) + np.stack([rows, cols], 1) * np.array(
        grid.scale_um
    )
    # napari draws slide pixel k centred at k * mpp: edge e is at (e - 0.5) * mpp
    expected = (grid.centres_xy[:, ::-1] - 0.5) * 0.69
    np.testing.assert_allclose(world_rc, expected, atol=1e-9)


def test_grid_to_dict_round_trip(synth):
    slide, _, _ = synth
    grid = make_tile_grid(slide, config=TilingConfig(stride_px=100))
    back = TileGrid.from_dict(json.loads(json.dumps(grid.to_dict())))
    for name in (
        "tile_px",
        "mpp",
        "stride_px",
        "slide_mpp",
        "n_rows",
        "n_cols",
        "width_px",
        "height_px",
    ):
        assert getattr(back, name) == getattr(grid, name)
    np.testing.assert_array_equal(back.tile_ids, grid.tile_ids)
    np.testing.assert_array_equal(back.coords, grid.coords)
    with pytest.raises(BadInputError, match="tile grid"):
        TileGrid.from_dict({"tile_px": 224})


def test_no_tissue_is_a_clear_error():
    blank = Slide.from_array(
        synthetic_he_image(600, 800, seed=1, tissue=False), mpp=0.5
    )
    with pytest.raises(
        NoTissueError, match="no tissue found.*--tissue-threshold"
    ) as info:
        make_tile_grid(blank)
    assert isinstance(info.value, BadInputError)


def test_tile_larger_than_slide_is_an_encoder_mismatch():
    small = Slide.from_array(synthetic_he_image(150, 200, seed=1), mpp=0.5)
    with pytest.raises(EncoderMismatchError, match="larger than the slide"):
        make_tile_grid(small)  # 224 px at 0.5 um/px = 224 level-0 px > 150
    with pytest.raises(EncoderMismatchError):
        make_tile_grid(
            small.with_mpp(0.25, source="user"), config=TilingConfig(tile_px=100)
        )


def test_read_tiles_matches_the_slide_pixels(synth):
    slide, _, _ = synth
    lossless = Slide.from_array(slide.read_region(0, 0, 1024, 768), mpp=0.5)
    grid = make_tile_grid(lossless)
    image = lossless.read_region(0, 0, 1024, 768)
    idx = np.arange(len(grid))[::3]
    tiles = read_tiles(lossless, grid, idx)
    assert tiles.shape == (idx.size, 224, 224, 3)
    assert tiles.dtype == np.uint8
    for tile, (x, y) in zip(tiles, grid.coords[idx], strict=True):
        np.testing.assert_array_equal(tile, image[y : y + 224, x : x + 224])
    # at another resolution: 224 px at 1 um/px covers 448 level-0 px, area-averaged
    coarse = make_tile_grid(
        lossless, config=TilingConfig(mpp=1.0, min_tissue_fraction=0.0)
    )
    tile = read_tiles(lossless, coarse, [0])[0]
    assert np.abs(tile.astype(int) - block_mean(image[:448, :448], 2)).max() <= 1
    with pytest.raises(BadInputError, match="tile positions"):
        read_tiles(lossless, grid, [len(grid)])


def _sample(slide: Slide, xy: np.ndarray, mpp: float) -> SpatialSample:
    import anndata as ad

    adata = ad.AnnData(np.ones((len(xy), 2), np.float32))
    adata.obsm["spatial"] = np.asarray(xy, np.float64)
    return SpatialSample(
        slide=slide,
        adata=adata,
        mpp=mpp,
        spot_diameter_um=55.0,
        name="s",
        mpp_source="estimated",
    )


def test_spot_patches_are_centred_on_spots():
    img = np.full((800, 900, 3), 235, np.uint8)
    centres = np.array([[200, 150], [640, 500], [450, 700]])
    for i, (x, y) in enumerate(centres):
        img[y - 2 : y + 2, x - 2 : x + 2] = (20 * i, 100, 200)
    slide = Slide.from_array(img, mpp=None)  # no slide mpp: the sample's is used
    patches = spot_patches(_sample(slide, centres, mpp=0.25), size_px=64, mpp=0.5)
    assert patches.shape == (3, 64, 64, 3)
    for i, patch in enumerate(patches):
        # 64 px at 0.5 um/px = 128 level-0 px, area-averaged 2x2: the 4x4 marker is
        # exactly output pixels 31..32 (level-0 cx-2..cx+1)
        np.testing.assert_array_equal(
            patch[31:33, 31:33], np.full((2, 2, 3), (20 * i, 100, 200))
        )
        assert (patch[:29] == 235).all()
        assert (patch[35:] == 235).all()
    with pytest.raises(EncoderMismatchError):
        spot_patches(_sample(slide, centres, mpp=0.25), size_px=224, mpp=2.0)


def test_her2st_tissue_mask_grid_and_spot_patches(her2st):
    slide, spots_xy = her2st
    mask = tissue_mask(slide)
    assert 0.03 < mask.fraction < 0.5  # the section covers part of the glass
    # nearly every spot under the tissue (selected == 1) falls on the mask
    mx = np.clip(
        (spots_xy[:, 0] / mask.downsample).astype(int), 0, mask.mask.shape[1] - 1
    )
    my = np.clip(
        (spots_xy[:, 1] / mask.downsample).astype(int), 0, mask.mask.shape[0] - 1
    )
    assert mask.mask[my, mx].mean() > 0.9
    slide = slide.with_mpp(0.687, source="estimated")  # her2st's spot-grid estimate
    grid = make_tile_grid(slide, mask=mask)
    assert grid.tile_size_l0 == pytest.approx(224 * 0.5 / 0.687)
    assert 200 < len(grid) < 2000
    assert len(np.unique(grid.tile_ids)) == len(grid)
    again = make_tile_grid(slide, mask=mask)
    np.testing.assert_array_equal(again.tile_ids, grid.tile_ids)
    tiles = read_tiles(slide, grid, np.arange(8))
    assert tiles.shape == (8, 224, 224, 3)
    patches = spot_patches(
        _sample(slide, spots_xy[:12], mpp=0.687), size_px=224, mpp=0.5
    )
    assert patches.shape == (12, 224, 224, 3)

    # spot patches sit on stained tissue: clearly more saturated than the glass
    def sat(a):
        return ((a.max(-1).astype(float) - a.min(-1)) / np.maximum(a.max(-1), 1)).mean()

    glass = slide.read_patch(300, 300, size_px=224, mpp_out=0.5)
    assert min(sat(p) for p in patches) > 2 * sat(glass)
