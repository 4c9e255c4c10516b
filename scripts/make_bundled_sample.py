"""Regenerate the bundled sample ``src/napari_seal/data/her2st_C2`` from ../shared.

Converts her2st section C2 (legacy ST: counts + spot selection + full-resolution
JPEG) with napari-seal's own ``import_sample`` to the HEST layout, at full resolution,
then writes the attribution (``SOURCE.md``) next to it::

    .venv/bin/python scripts/make_bundled_sample.py [--shared DIR] [--quality 85]

The pixel size is estimated from the spot grid (no ``--mpp``), exactly as a user's
import would do. The result must stay under 15 MB (checked here).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEST = REPO / "src" / "napari_seal" / "data" / "her2st_C2"
SAMPLE_ID = "her2st_C2"
MAX_BYTES = 15 * 2**20
HER2ST_COMMIT = "85df7411b987a7dec3feff9718b869a7a82091ec"
FILES = {
    "counts": "her2st/data/ST-cnts/C2.tsv.gz",
    "spots": "her2st/data/ST-spotfiles/C2_selection.tsv",
    "image": "her2st/data/ST-imgs/C/C2/5714_HE_BT_C2.jpg",
}

SOURCE_MD = """# her2st section C2 (bundled sample, HEST layout)

Real patient data (not simulated): HER2-positive breast cancer, patient C, section C2,
legacy Spatial Transcriptomics (100 um spots on a 200 um grid), with its full-resolution
H&E image.

## Origin
- Repository: https://github.com/almaan/her2st, commit `{commit}` (2022-11-26):
  `data/ST-cnts/C2.tsv.gz`, `data/ST-spotfiles/C2_selection.tsv`,
  `data/ST-imgs/C/C2/5714_HE_BT_C2.jpg`.
- Paper: Andersson A. et al., "Spatial deconvolution of HER2-positive breast cancer
  delineates tumor-associated cell type interactions", Nat Commun 12, 6012 (2021),
  PMID 34650042. Also on Zenodo (record 4751624) and in HEST-1k (SPA119-SPA154).

## License
Creative Commons Attribution 4.0 International (CC BY 4.0), as HEST-1k's metadata lists
this dataset (the GitHub repository has no LICENSE file). Cite the paper above when you
use it.

## What was changed
Converted with napari-seal's own importer (`scripts/make_bundled_sample.py`, which
runs `napari_seal.io.convert.import_sample("legacy-st", ...)`):
- `wsis/{sid}.tif`: the H&E at full resolution ({width} x {height} px), re-encoded as a
  tiled pyramidal TIFF (JPEG quality {quality}, {levels} levels), pixel size embedded.
- `st/{sid}.h5ad`: all {n_genes} genes, raw integer UMI counts of the {n_spots} spots in
  both the counts table and the spot selection (inner join on the "XxY" ids, which are
  kept as `obs_names`); `obsm["spatial"]` = (`pixel_x`, `pixel_y`) level-0 pixels.
- `metadata/{sid}.json`: pixel size {mpp:.4f} um/px, estimated
  (`pixel_size_um_estimated`) by a least-squares affine fit of the spot pixel centres
  on the array coordinates at 200 um per step (the JPEG holds no pixel size); spot
  diameter 100 um, inter-spot distance 200 um.

## sha256 of the inputs
```
{sha}
```
"""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _shared_default() -> Path:
    env = os.environ.get("NAPARI_SEAL_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    """Rebuild the bundled sample; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared",
        type=Path,
        default=_shared_default(),
        help="the shared data folder holding her2st/",
    )
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality")
    parser.add_argument("--dest", type=Path, default=DEST)
    args = parser.parse_args(argv)

    from napari_seal.io.atomic import atomic_write_text
    from napari_seal.io.convert import import_sample
    from napari_seal.io.hest import load_sample

    paths = {k: args.shared / v for k, v in FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        sys.stderr.write(f"missing input(s): {', '.join(missing)}\n")
        return 2
    work = Path(tempfile.mkdtemp(prefix="bundled-", dir=args.dest.parent))
    try:
        out = import_sample(
            "legacy-st",
            [],
            out=work / SAMPLE_ID,
            counts=paths["counts"],
            spots=paths["spots"],
            image=paths["image"],
            sample_id=SAMPLE_ID,
            jpeg_quality=args.quality,
        )
        meta_path = out / "metadata" / f"{SAMPLE_ID}.json"
        meta = json.loads(meta_path.read_text())
        # machine-independent provenance instead of this machine's absolute paths
        meta["source_files"] = {k: f"{v}" for k, v in FILES.items()}
        meta["source_repository"] = "https://github.com/almaan/her2st"
        meta["source_commit"] = HER2ST_COMMIT
        meta["license"] = "CC BY 4.0"
        meta["citation"] = "Andersson A. et al., Nat Commun 12, 6012 (2021)"
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
        sample = load_sample(out)
        sha = "\n".join(f"{_sha256(p)}  {FILES[k]}" for k, p in paths.items())
        text = SOURCE_MD.format(
            commit=HER2ST_COMMIT,
            sid=SAMPLE_ID,
            width=sample.slide.width_px,
            height=sample.slide.height_px,
            quality=args.quality,
            levels=sample.slide.n_levels,
            n_genes=sample.n_genes,
            n_spots=sample.n_spots,
            mpp=sample.mpp,
            sha=sha,
        )
        (out / "SOURCE.md").write_text(text)
        total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        if total > MAX_BYTES:
            sys.stderr.write(
                f"bundled sample is {total / 2**20:.1f} MB > 15 MB; lower --quality\n"
            )
            return 1
        if args.dest.exists():
            shutil.rmtree(args.dest)
        out.replace(args.dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for p in sorted(args.dest.rglob("*")):
        if p.is_file():
            sys.stdout.write(
                f"{p.stat().st_size / 2**20:8.2f} MB  {p.relative_to(args.dest)}\n"
            )
    sys.stdout.write(
        f"total {total / 2**20:.2f} MB, mpp {sample.mpp:.4f} ({sample.mpp_source}), "
        f"{sample.n_spots} spots x {sample.n_genes} genes\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
