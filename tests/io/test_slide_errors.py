"""Bad slide input: each case is a typed SlideReadError with a fix, input untouched."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_seal.errors import BadInputError, SealError, SlideReadError
from napari_seal.io.slide.core import open_slide
from napari_seal.io.slide.writer import write_pyramidal_tiff
from napari_seal.testing import synthetic_he_image


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return synthetic_he_image(240, 320, seed=7)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expect_error(path: Path, match: str, tmp_path: Path) -> SlideReadError:
    """Opening ``path`` raises SlideReadError matching ``match``; file unchanged."""
    before = _digest(path) if path.is_file() else None
    with pytest.raises(SlideReadError, match=match) as info:
        open_slide(path, cache_dir=tmp_path / "cache")
    assert isinstance(info.value, (BadInputError, SealError))
    if before is not None:
        assert _digest(path) == before
    # a failed flat-image open leaves no half-built cache behind
    assert (
        not list((tmp_path / "cache").glob("*.zarr"))
        if (tmp_path / "cache").exists()
        else True
    )
    return info.value


def test_missing_file_folder_and_empty_file(tmp_path):
    expect_error(tmp_path / "nope.svs", "not found", tmp_path)
    expect_error(tmp_path, "is a folder", tmp_path)
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    expect_error(empty, "empty", tmp_path)


def test_unknown_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image\n" * 10)
    expect_error(path, "OpenSlide|not a TIFF", tmp_path)


def test_truncated_jpeg(tmp_path, rgb):
    good = tmp_path / "good.jpg"
    Image.fromarray(rgb).save(good, quality=90)
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size * 6 // 10])
    err = expect_error(bad, "truncated", tmp_path)
    assert "download it again" in str(err)
    assert (
        open_slide(good, cache_dir=tmp_path / "ok").width_px == 320
    )  # the intact file opens


def test_corrupt_jpeg_and_png(tmp_path, rgb):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(
        b"\xff\xd8\xff\xe0"
        + bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8))
    )
    expect_error(garbage, "corrupt", tmp_path)
    png = tmp_path / "good.png"
    Image.fromarray(rgb).save(png)
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    expect_error(cut, "truncated or corrupt", tmp_path)


def test_truncated_tiff(tmp_path, rgb):
    good = write_pyramidal_tiff(tmp_path / "good.tif", rgb, mpp=0.5, tile_px=64)
    for frac in (0.5, 0.95):
        bad = tmp_path / f"cut{frac}.tif"
        bad.write_bytes(good.read_bytes()[: int(good.stat().st_size * frac)])
        expect_error(bad, "truncated", tmp_path)


def test_corrupt_tiff_tile(tmp_path, rgb):
    good = write_pyramidal_tiff(tmp_path / "good.tif", rgb, mpp=0.5, tile_px=64)
    with tifffile.TiffFile(good) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data = bytearray(good.read_bytes())
    data[offset : offset + count] = bytes(count)  # zeroed tile: not a JPEG stream
    bad = tmp_path / "bad.tif"
    bad.write_bytes(bytes(data))
    expect_error(bad, "corrupt", tmp_path)


def test_grayscale_images(tmp_path, rgb):
    gray = rgb.mean(axis=-1).astype(np.uint8)
    for name in ("g.png", "g.jpg"):
        Image.fromarray(gray).save(tmp_path / name)
        err = expect_error(tmp_path / name, "grayscale", tmp_path)
        assert "RGB" in str(err)
    la = tmp_path / "la.png"
    Image.fromarray(gray).convert("LA").save(la)
    expect_error(la, "grayscale", tmp_path)
    tif = tmp_path / "g.tif"
    tifffile.imwrite(tif, gray, tile=(64, 64))
    expect_error(tif, "grayscale.*RGB brightfield", tmp_path)


def test_two_channel_and_fluorescence_tiffs(tmp_path, rgb):
    two = tmp_path / "two.tif"
    tifffile.imwrite(
        two,
        rgb[..., :2],
        photometric="minisblack",
        planarconfig="contig",
        extrasamples=["unspecified"],
        tile=(64, 64),
    )
    expect_error(two, "2-channel", tmp_path)
    fluo = tmp_path / "fluo.ome.tif"
    stack = np.moveaxis(rgb.astype(np.uint16) * 200, -1, 0)  # (C, Y, X) uint16
    tifffile.imwrite(
        fluo, stack, ome=True, metadata={"axes": "CYX"}, photometric="minisblack"
    )
    err = expect_error(fluo, "multi-channel", tmp_path)
    assert "RGB brightfield H&E" in str(err)
    deep = tmp_path / "rgb16.tif"
    tifffile.imwrite(
        deep, rgb.astype(np.uint16) * 257, photometric="rgb", tile=(64, 64)
    )
    expect_error(deep, "8-bit", tmp_path)


def test_rgba_drops_alpha(tmp_path, rgb):
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    png = tmp_path / "a.png"
    Image.fromarray(rgba).save(png)
    slide = open_slide(png, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(slide.read_region(0, 0, 320, 240), rgb)
    tif = tmp_path / "a.tif"
    tifffile.imwrite(
        tif, rgba, photometric="rgb", extrasamples=["unassalpha"], tile=(64, 64)
    )
    slide = open_slide(tif)
    assert slide.levels[0].shape == (240, 320, 3)
    np.testing.assert_array_equal(slide.read_region(0, 0, 320, 240), rgb)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_absurd_sizes_are_refused_before_allocating(tmp_path, rgb):
    png = tmp_path / "huge.png"
    png.write_bytes(_png_header_only(2_000_000_000, 2_000_000_000))
    expect_error(png, "GiB", tmp_path)  # refused from the header: no decode attempted
    good = write_pyramidal_tiff(tmp_path / "good.tif", rgb, mpp=0.5, tile_px=64)
    with tifffile.TiffFile(good) as tif:
        tag = tif.pages[0].tags["ImageWidth"]
        offset, fmt = tag.valueoffset, "<I" if tag.dtype == 4 else "<H"
    data = bytearray(good.read_bytes())
    data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, 4_000_000_000)
    bad = tmp_path / "wide.tif"
    bad.write_bytes(bytes(data))
    expect_error(bad, "px per side|corrupt", tmp_path)
