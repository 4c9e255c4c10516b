"""Helpers of the robustness tests (issue 7): checksums, expected refusals."""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from napari_seal.errors import SealError


def digest(path: Path) -> dict[str, str]:
    """sha256 of a file, or of every file under a folder (by relative path)."""
    path = Path(path)
    files = (
        [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    )
    return {
        str(p.relative_to(path) if p != path else p.name): hashlib.sha256(
            p.read_bytes()
        ).hexdigest()
        for p in files
    }


def refused(fn, exc: type[SealError], match: str, *inputs: Path) -> SealError:
    """``fn()`` raises ``exc`` whose message matches ``match``; inputs unchanged."""
    before = [digest(p) for p in inputs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc, match=match) as info:
            fn()
    assert isinstance(info.value, SealError)
    assert [digest(p) for p in inputs] == before, "a failed read modified its input"
    return info.value


def writable_copy(src: Path, dst: Path) -> Path:
    """Copy a read-only tree (../shared/data) so a test may damage the copy."""
    shutil.copytree(src, dst)
    for p in [dst, *dst.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


# hypothesis settings of the fuzz tests: few examples, derandomised (reproducible CI)
ROBUST = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FEW = settings(ROBUST, max_examples=25)


def only_seal_errors(fn):
    """Run ``fn``; a SealError is fine, anything else fails the property."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn()
        except SealError:
            return None


# Opens tiny files whose headers claim enormous images (run in a subprocess, so
# the peak RSS it prints belongs to these opens alone). argv[1]: a scratch folder.
HUGE_HEADERS_SCRIPT = r"""
import io, os, resource, struct, sys, time, zlib
from pathlib import Path
import numpy as np, tifffile
from PIL import Image
from napari_seal.errors import SlideReadError
from napari_seal.io.slide.core import open_slide
tmp = Path(sys.argv[1])
def png(w, h):
    def chunk(k, d):
        crc = zlib.crc32(k + d) & 0xFFFFFFFF
        return struct.pack(">I", len(d)) + k + d + struct.pack(">I", crc)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
def jpeg(w, h):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 100, 150)).save(buf, "JPEG")
    b = bytearray(buf.getvalue())
    struct.pack_into(">HH", b, b.find(b"\xff\xc0") + 5, h, w)
    return bytes(b)
def tiff(w, h, tiled):
    p = tmp / f"t{w}{tiled}.tif"
    kw = {"tile": (64, 64)} if tiled else {"rowsperstrip": 64}
    tifffile.imwrite(p, np.zeros((64, 64, 3), np.uint8), photometric="rgb", **kw)
    with tifffile.TiffFile(p) as tif:
        tags = tif.pages[0].tags
        spots = [(tags[n].valueoffset, tags[n].dtype)
                 for n in ("ImageWidth", "ImageLength")]
    data = bytearray(p.read_bytes())
    for (off, dt), v in zip(spots, (w, h)):
        assert int(dt) == 4, dt
        data[off:off + 4] = struct.pack("<I", v)
    p.write_bytes(bytes(data))
    return p
good = tmp / "warm.tif"
tifffile.imwrite(good, np.zeros((64, 64, 3), np.uint8), photometric="rgb",
                 tile=(64, 64))
open_slide(good).read_region(0, 0, 8, 8)  # load codecs before the baseline
cases = {
    "tiff 1e6 x 1e6 strips": tiff(10**6, 10**6, False),
    "tiff 1e6 x 1e6 tiles": tiff(10**6, 10**6, True),
    "tiff 100k x 100k tiles": tiff(10**5, 10**5, True),
}
for name, data in (("png 100k", png(10**5, 10**5)), ("jpeg 65k", jpeg(65000, 65000)),
                   ("jpeg 30k", jpeg(30000, 30000)), ("png 30k", png(30000, 30000))):
    p = tmp / (name.replace(" ", "_") + (".png" if "png" in name else ".jpg"))
    p.write_bytes(data)
    cases[name] = p
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for name, p in cases.items():
    t = time.perf_counter()
    try:
        s = open_slide(p, cache_dir=tmp / "cache")
        s.read_region(0, 0, 64, 64)
        s.thumbnail(max_px=64)
        print("OPENED", name.replace(" ", "_"))
    except SlideReadError as err:
        seconds = round(time.perf_counter() - t, 2)
        print("REFUSED", name.replace(" ", "_"), seconds, str(err)[:120])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RSS_JUMP_MB", (peak - base) / 1024)
"""


def legacy_tables(*, step_px: float = 290.0):
    """A 3 x 3 legacy-ST counts table (``"XxY"`` ids, genes G1, G2) and its spot table.

    Array coordinates x in 3..5, y in 4..6; ``step_px`` pixels per array step.
    """
    import numpy as np
    import pandas as pd

    ids = [(x, y) for x in range(3, 6) for y in range(4, 7)]
    counts = pd.DataFrame(
        np.arange(len(ids) * 2).reshape(-1, 2),
        columns=["G1", "G2"],
        index=[f"{x}x{y}" for x, y in ids],
    )
    spots = pd.DataFrame(
        {
            "x": [i[0] for i in ids],
            "y": [i[1] for i in ids],
            "pixel_x": [i[0] * step_px for i in ids],
            "pixel_y": [i[1] * step_px for i in ids],
            "selected": 1,
        }
    )
    return counts, spots
