"""Which tissue tiles are right: napari-seal's grid or LazySlide's (issue 14).

``bench_vs_lazyslide.py`` reports different tile counts for the same slide (LazySlide
keeps more). This script finds the tiles only one side keeps and shows them so a
person can judge:

- napari-seal: ``make_tile_grid`` with the ``default`` encoder's tiling (its saturation
  Otsu mask, tiles with >= 10 % tissue);
- LazySlide: ``pp.find_tissues`` -> ``pp.tile_tissues`` as ``bench_vs_lazyslide.py``
  calls it (the same 112 um field).

A tile is "kept by both" when at least half of its area is covered by the other side's
tiles. For every tile only one side keeps it measures an independent tissue content
(the share of the tile's pixels that are neither background-white nor grey: HSV
saturation > 0.1 and value < 0.92, read at 0.5 um/px) and writes:

- ``OUT/tiles_only_<side>.jpg``: 24 of those tiles (random, seeded), each labelled
  with its tissue share;
- ``OUT/tiles_overview.jpg``: the slide thumbnail with tiles only napari-seal keeps in
  red, only LazySlide in blue.

Prints counts and the tissue-share quartiles of each "only" set and of the tiles both
keep (the reference for what tissue looks like by this measure). Needs LazySlide (see
``bench_vs_lazyslide.py``); not part of the test suite.

Usage::

    python benchmarks/compare_tissue_tiles.py [--slide TIFF] [--out DIR] [--json F]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DOWN = 8  # level-0 px per coverage-raster px


def lazyslide_boxes(slide: Path) -> np.ndarray:
    """``(n, 4)`` level-0 ``x0, y0, x1, y1`` of the tiles LazySlide keeps."""
    import sys

    from wsidata import open_wsi

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_vs_lazyslide import tile_tissues

    with tempfile.TemporaryDirectory() as tmp:
        wsi = open_wsi(str(slide), store=str(Path(tmp) / "w.zarr"))
        tile_tissues(wsi)
        return np.array([g.bounds for g in wsi["tiles"].geometry], dtype=np.float64)


def seal_boxes(slide_obj) -> tuple[np.ndarray, object]:
    from napari_seal.embedding.inputs import tiling_for
    from napari_seal.models.factory import create_encoder
    from napari_seal.tiling.grid import make_tile_grid

    grid = make_tile_grid(slide_obj, config=tiling_for(create_encoder("default")))
    xy = grid.origins_xy()
    s = grid.tile_size_l0
    return np.concatenate([xy, xy + s], axis=1), grid


def raster(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    for x0, y0, x1, y1 in np.round(boxes / DOWN).astype(int):
        m[max(y0, 0) : y1, max(x0, 0) : x1] = True
    return m


def covered(boxes: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Fraction of each box covered by the union of ``other`` (on the coarse raster)."""
    b = np.round(boxes / DOWN).astype(int)
    integ = np.zeros((other.shape[0] + 1, other.shape[1] + 1))
    integ[1:, 1:] = other.cumsum(0).cumsum(1)
    h, w = other.shape
    x0, y0 = np.clip(b[:, 0], 0, w), np.clip(b[:, 1], 0, h)
    x1, y1 = np.clip(b[:, 2], 0, w), np.clip(b[:, 3], 0, h)
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    got = integ[y1, x1] - integ[y0, x1] - integ[y1, x0] + integ[y0, x0]
    return got / area


def tissue_share(tile: np.ndarray) -> float:
    rgb = tile.astype(np.float32) / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    return float(((sat > 0.1) & (mx < 0.92)).mean())


def read_boxes(slide_obj, boxes: np.ndarray) -> np.ndarray:
    out = []
    for x0, y0, x1, y1 in boxes:
        size_px = round((x1 - x0) * slide_obj.require_mpp() / 0.5)
        out.append(
            slide_obj.read_patch(
                (x0 + x1) / 2, (y0 + y1) / 2, size_px=size_px, mpp_out=0.5
            )
        )
    return out


def montage(
    tiles: list[np.ndarray], shares: list[float], path: Path, title: str
) -> None:
    cell, cols = 128, 8
    rows = max(1, -(-len(tiles) // cols))
    img = Image.new("RGB", (cols * cell, rows * cell + 24), "white")
    draw = ImageDraw.Draw(img)
    draw.text((4, 4), title, fill="black")
    for k, (t, s) in enumerate(zip(tiles, shares, strict=True)):
        r, c = divmod(k, cols)
        im = Image.fromarray(t).resize((cell - 4, cell - 4))
        img.paste(im, (c * cell + 2, 24 + r * cell + 2))
        draw.rectangle(
            [c * cell + 2, 24 + r * cell + 2, c * cell + 62, 24 + r * cell + 16],
            fill="white",
        )
        draw.text(
            (c * cell + 4, 24 + r * cell + 3), f"{100 * s:.0f}% tissue", fill="black"
        )
    img.save(path, quality=85)


def quartiles(v: list[float]) -> list[float]:
    return [round(float(q), 3) for q in np.quantile(v, [0.25, 0.5, 0.75])] if v else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--slide", type=Path, default=Path("/tmp/cc/her2st-C2-mirrored-2x2.tif")
    )
    ap.add_argument("--out", type=Path, default=Path("/tmp/tissue-tiles"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    from napari_seal.io.slide.core import open_slide

    args.out.mkdir(parents=True, exist_ok=True)
    slide_obj = open_slide(args.slide)
    ours, grid = seal_boxes(slide_obj)
    theirs = lazyslide_boxes(args.slide)
    shape = (slide_obj.height_px // DOWN + 1, slide_obj.width_px // DOWN + 1)
    ours_only = covered(ours, raster(theirs, shape)) < 0.5
    theirs_only = covered(theirs, raster(ours, shape)) < 0.5
    rng = np.random.default_rng(0)
    report = {
        "slide": str(args.slide),
        "napari_seal_tiles": len(ours),
        "lazyslide_tiles": len(theirs),
    }
    sets = {
        "napari_seal": ours[ours_only],
        "lazyslide": theirs[theirs_only],
        "both": ours[~ours_only],
    }
    for name, boxes in sets.items():
        tiles = read_boxes(slide_obj, boxes)
        shares = [tissue_share(t) for t in tiles]
        report[f"{name}_only" if name != "both" else "kept_by_both"] = {
            "tiles": len(boxes),
            "tissue_share_q25_q50_q75": quartiles(shares),
            "below_10pct": int(sum(s < 0.1 for s in shares)),
        }
        if name != "both":
            pick = rng.permutation(len(tiles))[:24]
            montage(
                [tiles[i] for i in pick],
                [shares[i] for i in pick],
                args.out / f"tiles_only_{name}.jpg",
                f"{len(boxes)} tiles only {name} keeps (24 at random)",
            )
    thumb = slide_obj.thumbnail(max_px=1000)
    f = thumb.shape[1] / slide_obj.width_px
    im = Image.fromarray(thumb).convert("RGB")
    draw = ImageDraw.Draw(im)
    for boxes, colour in ((sets["napari_seal"], "red"), (sets["lazyslide"], "blue")):
        for x0, y0, x1, y1 in boxes * f:
            draw.rectangle([x0, y0, x1, y1], outline=colour, width=1)
    im.save(args.out / "tiles_overview.jpg", quality=85)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
