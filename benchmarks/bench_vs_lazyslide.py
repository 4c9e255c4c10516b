"""napari-seal vs LazySlide on the same slide, architecture and tiling (issue 14).

Both embed the tissue tiles of one real-tissue pyramidal TIFF (default: the her2st C2
section mirrored 2 x 2 that ``bench_cpu_ceiling.py`` writes, 18,548 x 19,822 px) with
the same module, the ``default`` encoder's EfficientNet-Lite0 (random weights: nothing
is downloaded; LazySlide gets the module and an equivalent transform instead of its
model zoo), 224 px tiles at 0.5 um/px, batch 64, 2 torch threads:

- LazySlide: ``open_wsi`` -> ``pp.find_tissues`` -> ``pp.tile_tissues(224, mpp=0.5)``
  (on a slide coarser than 0.5 um/px, which LazySlide will not up-sample: the same
  112 um field at level 0, resized to 224 px by the transform, as napari-seal reads it)
  -> ``tl.feature_extraction`` in fp32, then with bf16 autocast (reported as failed if
  it raises); tile counts and tiles/s of the extraction;
- napari-seal: ``napari_seal.embed`` (its own tissue mask and grid), with its ``auto``
  plan (what a user gets) and forced to ``fp32`` (the precision LazySlide runs in).

Prints each tiles/s, the tile counts, ``RATIO napari-seal / LazySlide best``
(goal >= 2.5) and ``RATIO fp32`` (both in fp32). Which side's tiles are right:
``compare_tissue_tiles.py``. LazySlide is an optional benchmark dependency; install it
in a venv of its own that sees this one (``pip install "lazyslide==0.13.*"``), as its
dependencies pin other versions. Not part of the test suite.

Usage::

    python benchmarks/bench_vs_lazyslide.py [--slide TIFF] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def tile_tissues(wsi) -> None:
    """LazySlide's tissue detection and 224 px tiles at 0.5 um/px (on a coarser slide,
    which it will not up-sample: the same 112 um field at level 0, resized later)."""
    import lazyslide as zs

    zs.pp.find_tissues(wsi)
    slide_mpp = float(wsi.properties.mpp)
    if slide_mpp <= 0.5:
        zs.pp.tile_tissues(wsi, 224, mpp=0.5)
    else:
        zs.pp.tile_tissues(wsi, round(224 * 0.5 / slide_mpp))


def lazyslide_run(slide: Path, module, mean, std, *, bf16: bool, batch: int) -> dict:
    import lazyslide as zs
    from torchvision.transforms import v2
    from wsidata import open_wsi

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        wsi = open_wsi(str(slide), store=str(Path(tmp) / "w.zarr"))
        tile_tissues(wsi)
        n = len(wsi["tiles"])
        setup = time.perf_counter() - t0
        transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                                v2.Resize((224, 224), antialias=True),
                                v2.Normalize(mean, std)])
        t1 = time.perf_counter()
        try:
            zs.tl.feature_extraction(
                wsi, module, model_name="effnet", transform=transform, device="cpu",
                amp=bf16, autocast_dtype=torch.bfloat16 if bf16 else None,
                batch_size=batch, num_workers=0, pbar=False,
            )
        except Exception as err:  # noqa: BLE001  (reported: a benchmark, not product)
            return {"tiles": n, "error": f"{type(err).__name__}: {err}"[:300]}
        dt = time.perf_counter() - t1
    return {"tiles": n, "setup_s": setup, "extract_s": dt, "tiles_per_s": n / dt}


def seal_run(slide: Path, batch: int, precision: str = "auto") -> dict:
    from napari_seal import embed
    from napari_seal.predict.expression import open_store

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        embed(slide, "default", Path(tmp) / "s.zarr", batch_size=batch,
              precision=precision)
        dt = time.perf_counter() - t0
        n = int(open_store(Path(tmp) / "s.zarr").n_tiles)
    return {"tiles": n, "total_s": dt, "tiles_per_s": n / dt}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slide", type=Path, default=Path("/tmp/cc/her2st-C2-mirrored-2x2.tif"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not args.slide.is_file():
        raise SystemExit(f"{args.slide} not found: run bench_cpu_ceiling.py --workdir "
                         f"{args.slide.parent} first (it writes the slide)")
    torch.set_num_threads(2)
    from napari_seal.models.factory import create_encoder

    enc = create_encoder("default")
    module = enc.module.eval()
    out = {"slide": str(args.slide), "batch": args.batch_size, "threads": 2}
    out["napari_seal"] = seal_run(args.slide, args.batch_size)
    print("napari-seal:", json.dumps(out["napari_seal"]), flush=True)
    out["napari_seal_fp32"] = seal_run(args.slide, args.batch_size, "fp32")
    print("napari-seal fp32:", json.dumps(out["napari_seal_fp32"]), flush=True)
    for bf16 in (False, True):
        key = "lazyslide_bf16" if bf16 else "lazyslide_fp32"
        out[key] = lazyslide_run(args.slide, module, enc.mean, enc.std, bf16=bf16,
                                 batch=args.batch_size)
        print(f"{key}:", json.dumps(out[key]), flush=True)
    best = max((v.get("tiles_per_s", 0.0) for k, v in out.items()
                if k.startswith("lazyslide")), default=0.0)
    if best:
        out["ratio"] = out["napari_seal"]["tiles_per_s"] / best
        print(f"RATIO napari-seal / LazySlide best = {out['ratio']:.2f} (goal >= 2.5); "
              f"tiles: napari-seal {out['napari_seal']['tiles']}, LazySlide "
              f"{out['lazyslide_fp32']['tiles']}")
    if out["lazyslide_fp32"].get("tiles_per_s"):
        out["ratio_fp32"] = (out["napari_seal_fp32"]["tiles_per_s"]
                             / out["lazyslide_fp32"]["tiles_per_s"])
        print(f"RATIO fp32 (both fp32) = {out['ratio_fp32']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
