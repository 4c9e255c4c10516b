"""Slide readers and the pyramidal TIFF writer (issue 2, "Slide readers")."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
from PIL import Image

import napari_seal.io.slide.flat as _flat
import napari_seal.io.slide.tiff as _tiff
from napari_seal.errors import BadInputError, MppUnknownError
from napari_seal.io.slide.core import Slide, open_slide
from napari_seal.io.slide.source import block_mean
from napari_seal.io.slide.writer import write_pyramidal_tiff
from napari_seal.testing import (
    synthetic_he_image,
    synthetic_large_slide,
    write_synthetic_slide,
)

C2_SHA256 = "26e2f73ae840cdd46c5bba405aae181f13a56a376b9848dff23f7a9c5de7f19e"


def _shared_data_dir() -> Path | None:
    env = os.environ.get("NAPARI_SEAL_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"
    return root if root.is_dir() else None


@pytest.fixture
def her2st_c2() -> Path:
    root = _shared_data_dir()
    path = None if root is None else root / "her2st/data/ST-imgs/C/C2/5714_HE_BT_C2.jpg"
    if path is None or not path.is_file():
        pytest.skip("her2st data not found (set NAPARI_SEAL_SHARED_DATA)")
    return path


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return synthetic_he_image(600, 900, seed=1)


@pytest.fixture(scope="module")
def jpeg_tiff(tmp_path_factory, image) -> Path:
    path = tmp_path_factory.mktemp("tiff") / "slide.tif"
    return write_pyramidal_tiff(path, image, mpp=0.25, tile_px=256, quality=90)


def test_pyramidal_tiff_round_trips_pixels_and_mpp(jpeg_tiff, image):
    slide = open_slide(jpeg_tiff)
    assert slide.kind == "tiff"
    assert (slide.width_px, slide.height_px) == (900, 600)
    assert slide.mpp == pytest.approx(0.25)
    assert slide.mpp_source == "metadata"
    # 900 -> 450 -> 225 (fits one 256 px tile): three levels, exact factors of 2
    assert slide.n_levels == 3
    assert slide.downsamples == [1.0, 2.0, 4.0]
    assert [lv.shape for lv in slide.levels] == [
        (600, 900, 3),
        (300, 450, 3),
        (150, 225, 3),
    ]
    assert all(isinstance(lv, da.Array) and lv.dtype == np.uint8 for lv in slide.levels)
    level0 = slide.read_region(0, 0, 900, 600)
    assert np.abs(level0.astype(int) - image).mean() < 3.0  # JPEG q90
    level1 = slide.read_region(0, 0, 450, 300, level=1)
    assert np.abs(level1.astype(int) - block_mean(image, 2)).mean() < 3.0
    # the dask pyramid and read_region agree
    np.testing.assert_array_equal(
        slide.levels[1][100:200, 50:300].compute(), level1[100:200, 50:300]
    )


def test_lossless_tiff_is_exact_and_levels_are_area_means(tmp_path, image):
    path = write_pyramidal_tiff(
        tmp_path / "z.tif", image, mpp=0.5, tile_px=128, compression="zlib"
    )
    slide = open_slide(path)
    np.testing.assert_array_equal(slide.read_region(0, 0, 900, 600), image)
    np.testing.assert_array_equal(
        slide.read_region(0, 0, 450, 300, level=1), block_mean(image, 2)
    )
    np.testing.assert_array_equal(
        slide.read_region(0, 0, 225, 150, level=2), block_mean(block_mean(image, 2), 2)
    )
    # a dask array source streams the same pixels
    lazy = da.from_array(image, chunks=(200, 300, 3))
    path2 = write_pyramidal_tiff(
        tmp_path / "d.tif", lazy, mpp=0.5, tile_px=128, compression="zlib"
    )
    np.testing.assert_array_equal(open_slide(path2).read_region(0, 0, 900, 600), image)


def test_written_tiff_is_generic_tiled_tiff_for_other_readers(jpeg_tiff):
    with tifffile.TiffFile(jpeg_tiff) as tif:
        assert len(tif.pages) == 3
        p0, p1 = tif.pages[0], tif.pages[1]
        assert p0.is_tiled
        assert (p0.tilelength, p0.tilewidth) == (256, 256)
        assert p1.is_tiled
        assert p1.subfiletype == 1
        assert int(p0.tags["ResolutionUnit"].value) == 3  # centimetre
        num, den = p0.tags["XResolution"].value
        assert 1e4 / (num / den) == pytest.approx(0.25, rel=1e-4)
        assert "MPP = 0.25" in p0.description
    openslide = pytest.importorskip("openslide")
    osr = openslide.OpenSlide(str(jpeg_tiff))
    try:
        assert osr.level_count == 3
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        theirs = np.asarray(osr.read_region((300, 200), 0, (64, 48)))[..., :3]
    finally:
        osr.close()
    ours = open_slide(jpeg_tiff).read_region(300, 200, 64, 48)
    assert np.abs(theirs.astype(int) - ours).mean() < 1.0


class _CountingArray:
    """Array-like that records the size of every window read from it."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.shape, self.dtype, self.ndim = (
            array,
            array.shape,
            array.dtype,
            3,
        )
        self.windows: list[int] = []

    def __getitem__(self, key):
        out = self.array[key]
        self.windows.append(out.shape[0] * out.shape[1])
        return out


def test_writer_streams_tile_by_tile(tmp_path, image):
    source = _CountingArray(image)
    path = write_pyramidal_tiff(
        tmp_path / "s.tif",
        Slide.from_array(source, mpp=0.5),
        mpp=0.5,
        tile_px=128,
        compression="zlib",
    )
    # never a whole-image read: each read is one output tile (or 2x2 tiles for level 1)
    assert max(source.windows) <= 4 * 128 * 128
    assert sum(source.windows) <= 2.2 * image.shape[0] * image.shape[1]
    np.testing.assert_array_equal(open_slide(path).read_region(0, 0, 900, 600), image)


def test_writer_reuses_a_lazy_pyramid(tmp_path):
    slide = synthetic_large_slide(3000, 2200, mpp=0.5, tile_px=256)
    path = write_pyramidal_tiff(tmp_path / "big.tif", slide, mpp=0.5, tile_px=256)
    out = open_slide(path)
    assert out.n_levels == slide.n_levels == 5
    for level in (0, 2):
        want = slide.read_region(700, 500, 300, 200, level=level)
        got = out.read_region(700, 500, 300, 200, level=level)
        assert np.abs(want.astype(int) - got).mean() < 8.0  # noisy tiles, JPEG 4:2:0


def test_writer_refuses_to_overwrite_its_input(jpeg_tiff):
    before = jpeg_tiff.read_bytes()
    with pytest.raises(Exception, match="refusing to overwrite"):
        write_pyramidal_tiff(jpeg_tiff, open_slide(jpeg_tiff), mpp=0.25)
    assert jpeg_tiff.read_bytes() == before
    with pytest.raises(BadInputError, match="multiple of 16"):
        write_pyramidal_tiff(
            jpeg_tiff.with_name("x.tif"),
            np.zeros((8, 8, 3), np.uint8),
            mpp=1,
            tile_px=100,
        )


def test_ome_tiff_physical_size_with_units(tmp_path, image):
    path = tmp_path / "ome.ome.tif"
    meta = {
        "axes": "YXS",
        "PhysicalSizeX": 250,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 250,
        "PhysicalSizeYUnit": "nm",
    }
    with tifffile.TiffWriter(path, ome=True) as tw:
        kw = {"tile": (128, 128), "photometric": "rgb", "compression": "zlib"}
        tw.write(image, subifds=1, metadata=meta, **kw)
        tw.write(block_mean(image, 2), subfiletype=1, **kw)
    slide = open_slide(path)
    assert slide.kind == "ome-tiff"
    assert slide.mpp == pytest.approx(0.25)
    assert slide.mpp_source == "metadata"
    assert slide.n_levels == 2
    np.testing.assert_array_equal(
        slide.read_region(10, 20, 300, 200), image[20:220, 10:310]
    )


@pytest.mark.parametrize(
    ("resolution", "unit", "expected"),
    [
        (20000.0, "CENTIMETER", 0.5),
        (50800.0, "INCH", 0.5),
        (72.0, "INCH", None),  # the default "no resolution" value
        (10.0, "CENTIMETER", None),  # 1000 um/px: implausible for brightfield
    ],
)
def test_tiff_resolution_tags(tmp_path, resolution, unit, expected):
    path = tmp_path / "r.tif"
    img = synthetic_he_image(64, 96, seed=3)
    tifffile.imwrite(
        path,
        img,
        photometric="rgb",
        tile=(32, 32),
        resolution=(resolution, resolution),
        resolutionunit=unit,
        metadata=None,
    )
    slide = open_slide(path)
    if expected is None:
        assert slide.mpp is None
        assert slide.mpp_source == "unknown"
    else:
        assert slide.mpp == pytest.approx(expected)


def test_user_mpp_overrides_metadata_and_with_mpp_copies(jpeg_tiff):
    slide = open_slide(jpeg_tiff, mpp=0.3)
    assert (slide.mpp, slide.mpp_source) == (0.3, "user")
    other = slide.with_mpp(0.7, source="estimated")
    assert (other.mpp, other.mpp_source) == (0.7, "estimated")
    assert slide.mpp == 0.3  # unchanged
    for bad in (-1, 0, "abc", float("nan")):
        with pytest.raises(BadInputError):
            open_slide(jpeg_tiff, mpp=bad)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_flat_image_dpi_is_not_a_pixel_size(tmp_path, fmt):
    img = synthetic_he_image(300, 400, seed=4)
    path = tmp_path / f"flat.{fmt.lower()}"
    Image.fromarray(img).save(path, format=fmt, dpi=(2540, 2540))
    slide = open_slide(path, cache_dir=tmp_path / "cache")
    assert slide.kind == fmt.lower()
    assert slide.mpp is None
    assert slide.mpp_source == "unknown"
    with pytest.raises(MppUnknownError, match="--mpp"):
        slide.require_mpp()
    if fmt == "PNG":  # lossless: the cached pyramid holds exactly the pixels
        np.testing.assert_array_equal(slide.read_region(0, 0, 400, 300), img)


def test_read_region_level_coordinates_and_white_outside():
    img = synthetic_he_image(200, 300, seed=5)
    slide = Slide.from_array([img, block_mean(img, 2)], mpp=0.5)
    np.testing.assert_array_equal(slide.read_region(40, 60, 50, 30), img[60:90, 40:90])
    # level 1: top-left given in level-0 px, size in level-1 px
    np.testing.assert_array_equal(
        slide.read_region(40, 60, 20, 10, level=1), block_mean(img, 2)[30:40, 20:40]
    )
    out = slide.read_region(-10, 190, 30, 20)
    assert (out[:, :10] == 255).all()
    assert (out[10:] == 255).all()
    np.testing.assert_array_equal(out[:10, 10:], img[190:200, 0:20])


def _ramp(h: int = 800, w: int = 800) -> np.ndarray:
    """R = 0.25 * x, G = 0.25 * y (pixel-index coordinates), B = 128."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return (
        np.stack([0.25 * xx, 0.25 * yy, np.full_like(xx, 128)], axis=-1)
        .round()
        .astype(np.uint8)
    )


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.45, 2.0, 3.0])
def test_read_patch_geometry_and_scale(scale):
    img = _ramp()
    slide = Slide.from_array([img, block_mean(img, 2)], mpp=0.5)
    cx, cy, size = 400.3, 377.8, 64
    patch = slide.read_patch(cx, cy, size_px=size, mpp_out=0.5 * scale)
    assert patch.shape == (size, size, 3)
    assert patch.dtype == np.uint8
    # output pixel i covers level-0 [cx + (i - size/2) * s, ...); its centre in
    # pixel-index coordinates is cx + (i + 0.5 - size/2) * s - 0.5
    i = np.arange(size)
    x_exp = 0.25 * (cx + (i + 0.5 - size / 2) * scale - 0.5)
    y_exp = 0.25 * (cy + (i + 0.5 - size / 2) * scale - 0.5)
    inner = slice(2, size - 2)
    assert np.abs(patch[size // 2, inner, 0] - x_exp[inner]).max() <= 1.01
    assert np.abs(patch[inner, size // 2, 1] - y_exp[inner]).max() <= 1.01


def test_read_patch_centre_pixel_is_the_requested_centre():
    img = np.full((500, 500, 3), 230, np.uint8)
    img[300, 200] = (10, 200, 30)
    slide = Slide.from_array(img, mpp=0.5)
    # integer centre, even size, native resolution: an exact crop whose pixel
    # size // 2 is (cx, cy)
    patch = slide.read_patch(200, 300, size_px=224, mpp_out=0.5)
    np.testing.assert_array_equal(
        patch, img[300 - 112 : 300 + 112, 200 - 112 : 200 + 112]
    )
    assert tuple(patch[112, 112]) == (10, 200, 30)
    # odd size at 2x the resolution: the centre output pixel is the marker
    up = slide.read_patch(200.5, 300.5, size_px=65, mpp_out=0.25)
    assert tuple(up[32, 32]) == (10, 200, 30)


def test_read_patch_uses_the_coarsest_level_fine_enough():
    # levels painted in distinct colours to see which one a patch came from
    levels = [
        np.full((1024 // 2**k, 1024 // 2**k, 3), 40 * (k + 1), np.uint8)
        for k in range(3)
    ]
    slide = Slide.from_array(levels, mpp=0.25)
    assert slide.downsamples == [1.0, 2.0, 4.0]

    def level_of(mpp_out: float) -> int:
        return (
            int(slide.read_patch(512, 512, size_px=32, mpp_out=mpp_out)[16, 16, 0])
            // 40
            - 1
        )

    assert level_of(0.25) == 0
    assert level_of(0.45) == 0  # level 1 (0.5 um/px) is coarser than asked
    assert level_of(0.5) == 1
    assert level_of(0.9) == 1
    assert level_of(1.0) == 2
    assert level_of(8.0) == 2
    assert level_of(0.1) == 0  # finer than the slide: upsample level 0


def test_tiff_reads_touch_only_the_needed_tiles(jpeg_tiff, monkeypatch):
    slide = open_slide(jpeg_tiff)
    decoded: list[int] = []
    real = _tiff.TiffLevel._decode_segments

    def spy(self, indices):
        decoded.extend(indices)
        return real(self, indices)

    monkeypatch.setattr(_tiff.TiffLevel, "_decode_segments", spy)
    slide.read_patch(450, 300, size_px=224, mpp_out=0.25)  # straddles 4 tiles of 256
    assert 1 <= len(decoded) <= 4
    decoded.clear()
    slide.read_patch(450, 300, size_px=224, mpp_out=0.25)  # tile cache: no decode
    assert decoded == []


def test_slide_and_levels_pickle(jpeg_tiff):
    slide = open_slide(jpeg_tiff)
    level = pickle.loads(pickle.dumps(slide.levels[0]))
    np.testing.assert_array_equal(
        level[:300, :300].compute(), slide.read_region(0, 0, 300, 300)
    )
    again = pickle.loads(pickle.dumps(slide))
    assert again.identity() == slide.identity()
    np.testing.assert_array_equal(
        again.thumbnail(max_px=100), slide.thumbnail(max_px=100)
    )


def test_thumbnail_and_identity(jpeg_tiff, image):
    slide = open_slide(jpeg_tiff)
    thumb = slide.thumbnail(max_px=300)
    assert thumb.shape == (200, 300, 3)
    ref = np.asarray(Image.fromarray(image).resize((300, 200), Image.Resampling.BOX))
    assert np.abs(thumb.astype(int) - ref).mean() < 3.0
    ident = slide.identity()
    assert ident == {
        "path": str(jpeg_tiff.resolve()),
        "size": jpeg_tiff.stat().st_size,
        "mtime": jpeg_tiff.stat().st_mtime,
    }


def test_synthetic_slide_helper(tmp_path):
    path = write_synthetic_slide(
        tmp_path / "s.tif", width_px=512, height_px=384, mpp=0.5, tile_px=128
    )
    slide = open_slide(path)
    assert (slide.width_px, slide.height_px, slide.n_levels, slide.mpp) == (
        512,
        384,
        3,
        0.5,
    )
    again = synthetic_he_image(384, 512, seed=0)
    assert np.abs(slide.read_region(0, 0, 512, 384).astype(int) - again).mean() < 4.0


def test_her2st_jpeg_opens_lazily_and_decodes_once(her2st_c2, tmp_path, monkeypatch):
    stat_before = her2st_c2.stat()
    calls: list[Path] = []
    real = _flat._decode_flat
    monkeypatch.setattr(_flat, "_decode_flat", lambda p: calls.append(p) or real(p))
    cache = tmp_path / "cache"
    slide = open_slide(her2st_c2, cache_dir=cache)
    assert len(calls) == 1
    assert slide.kind == "jpeg"
    assert (slide.width_px, slide.height_px) == (9274, 9911)
    # 9911 -> 4956 -> 2478 -> 1239 -> 620 -> 310 (< 512)
    assert slide.n_levels == 6
    assert slide.downsamples == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    assert all(isinstance(lv, da.Array) for lv in slide.levels)
    # the JPEG's 72 dpi header is not a pixel size
    assert slide.mpp is None
    assert slide.mpp_source == "unknown"
    with pytest.raises(MppUnknownError, match="--mpp"):
        slide.require_mpp()
    thumb = slide.thumbnail(max_px=512)
    assert thumb.shape == (512, 479, 3)
    assert 100 < thumb.mean() < 250  # an image, not a blank
    # second open: served from the cache, never decodes again
    monkeypatch.setattr(_flat, "_decode_flat", lambda p: pytest.fail("decoded twice"))
    again = open_slide(her2st_c2, cache_dir=cache)
    assert len(list(cache.glob("*.zarr"))) == 1
    np.testing.assert_array_equal(
        again.read_region(4000, 5000, 300, 200), slide.read_region(4000, 5000, 300, 200)
    )
    # pixels agree with an independent decoder (Pillow), at 1/8 scale
    with _flat._no_pil_pixel_limit(), Image.open(her2st_c2) as im:
        im.draft("RGB", (im.width // 8, im.height // 8))  # libjpeg DCT scaling
        ref = np.asarray(im.convert("RGB"))
    ours = again.read_region(0, 0, ref.shape[1], ref.shape[0], level=3)
    assert np.abs(ours.astype(int) - ref).mean() < 3.0
    # the input file is never modified
    stat_after = her2st_c2.stat()
    assert (stat_after.st_size, stat_after.st_mtime) == (
        stat_before.st_size,
        stat_before.st_mtime,
    )
    assert hashlib.sha256(her2st_c2.read_bytes()).hexdigest() == C2_SHA256


def test_concurrent_reads_match_sequential_reads(jpeg_tiff):
    from concurrent.futures import ThreadPoolExecutor

    want = open_slide(jpeg_tiff).read_region(0, 0, 900, 600)
    for _ in range(3):  # fresh handles: tiles decoded concurrently from one file
        level = open_slide(jpeg_tiff).levels[0]
        with ThreadPoolExecutor(8) as pool:
            got = level.compute(scheduler="threads", pool=pool)
        np.testing.assert_array_equal(got, want)
