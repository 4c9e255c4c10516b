"""10x Visium readers: Space Ranger output folders and AnnData ``.h5ad`` files.

Space Ranger stores spot centres in full-resolution pixels
(``pxl_col_in_fullres`` = x, ``pxl_row_in_fullres`` = y). When no full-resolution
image is given, the coordinates are scaled by ``tissue_hires_scalef`` (or
``tissue_lowres_scalef``) onto the image that is used, and the factor is recorded.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_seal.errors import BadInputError, SpatialDataError
from napari_seal.io.st.contract import (
    READ_ERRORS,
    StData,
    build_adata,
    file_stem,
    require_file,
    validate_st,
    warn_dropped,
)
from napari_seal.io.st.grid import VISIUM, technology

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

__all__ = ["read_h5ad_st", "read_spaceranger"]

log = logging.getLogger(__name__)

POSITION_COLUMNS = (
    "barcode",
    "in_tissue",
    "array_row",
    "array_col",
    "pxl_row_in_fullres",
    "pxl_col_in_fullres",
)
POSITION_FILES = (
    "tissue_positions.csv",
    "tissue_positions_list.csv",
    "tissue_positions.parquet",
)


def _outs_dir(path: Path) -> Path:
    if (path / "outs").is_dir() and not (path / "spatial").is_dir():
        return path / "outs"
    return path


def _read_matrix(root: Path) -> AnnData:
    import scanpy as sc

    h5 = root / "filtered_feature_bc_matrix.h5"
    mtx = root / "filtered_feature_bc_matrix"
    if not h5.is_file() and not mtx.is_dir():
        msg = (
            "no filtered_feature_bc_matrix.h5 (or filtered_feature_bc_matrix/) in "
            f"{root}; give the Space Ranger 'outs' folder"
        )
        raise SpatialDataError(msg)
    src = h5 if h5.is_file() else mtx
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            adata = sc.read_10x_h5(h5) if src == h5 else sc.read_10x_mtx(mtx)
    except READ_ERRORS as err:
        msg = (
            f"cannot read the count matrix in {root}: "
            f"{' '.join(str(err).split())[:200]}; "
            "the file is truncated or corrupt: copy it again from the Space Ranger "
            "output"
        )
        raise SpatialDataError(msg) from err
    adata.var_names_make_unique()
    adata.uns["_matrix_path"] = str(src)
    return adata


def _read_positions(spatial: Path) -> tuple[pd.DataFrame, Path]:
    import pandas as pd

    for name in POSITION_FILES:
        path = spatial / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".parquet"):
                df = pd.read_parquet(path)
            else:
                with path.open(encoding="utf-8", errors="replace") as fh:
                    has_header = fh.readline().lower().startswith("barcode")
                df = pd.read_csv(
                    path,
                    header=0 if has_header else None,
                    names=None if has_header else list(POSITION_COLUMNS),
                )
        except ImportError as err:
            msg = (
                f"reading {path} needs pyarrow: pip install pyarrow (or give "
                "tissue_positions.csv)"
            )
            raise BadInputError(msg) from err
        except READ_ERRORS as err:
            msg = (
                f"cannot read {path}: {' '.join(str(err).split())[:200]}; the file is "
                "truncated or corrupt"
            )
            raise SpatialDataError(msg) from err
        missing = [c for c in POSITION_COLUMNS if c not in df.columns]
        if missing:
            msg = (
                f"{path} lacks column(s) {', '.join(missing)}; expected "
                f"{', '.join(POSITION_COLUMNS)}"
            )
            raise SpatialDataError(msg)
        df["barcode"] = df["barcode"].astype(str)
        for col in POSITION_COLUMNS[1:]:
            df[col] = pd.to_numeric(df[col], errors="coerce")
        return df, path
    msg = f"no spot positions in {spatial}: expected one of {', '.join(POSITION_FILES)}"
    raise SpatialDataError(msg)


def _read_scalefactors(spatial: Path) -> dict[str, float]:
    path = spatial / "scalefactors_json.json"
    if not path.is_file():
        msg = (
            f"scalefactors_json.json is missing in {spatial}; Space Ranger writes it "
            "next to "
            "the tissue positions: copy it from the original outs/spatial folder"
        )
        raise SpatialDataError(msg)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): float(v) for k, v in raw.items() if v is not None}
    except (ValueError, TypeError, AttributeError, OSError) as err:
        msg = (
            f"cannot parse {path}: {err}; restore the scalefactors file from the Space "
            "Ranger output"
        )
        raise SpatialDataError(msg) from err


def _is_blank(path: Path) -> bool:
    """True for a placeholder image whose RGB is one constant colour."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (512, 512))
            arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError):
        return False  # let the slide reader report a damaged image
    return bool(arr.size) and int(arr.max()) == int(arr.min())


def _choose_image(
    spatial: Path, scalefactors: dict[str, float], image: str | Path | None
) -> tuple[Path, float, str]:
    if image is not None:
        return require_file(image, role="image", flag="--image"), 1.0, "fullres"
    for res in ("hires", "lowres"):
        path = spatial / f"tissue_{res}_image.png"
        if not path.is_file():
            continue
        if _is_blank(path):
            msg = f"{path} is a blank placeholder image; skipping it"
            log.info(msg)
            warnings.warn(msg, UserWarning, stacklevel=4)
            continue
        key = f"tissue_{res}_scalef"
        if key not in scalefactors or not 0 < scalefactors[key] < np.inf:
            msg = (
                f"{key} is missing (or not a positive number) in "
                "scalefactors_json.json; restore the file or pass "
                "--image FULLRES"
            )
            raise SpatialDataError(msg)
        return path, scalefactors[key], res
    msg = (
        f"no usable image in {spatial} (tissue_hires_image.png / "
        "tissue_lowres_image.png); "
        "pass the full-resolution H&E with --image FILE"
    )
    raise SpatialDataError(msg)


def read_spaceranger(
    path: str | Path,
    *,
    image: str | Path | None = None,
    sample_id: str | None = None,
) -> StData:
    """Read a Space Ranger (Visium) output folder.

    Parameters
    ----------
    path
        The ``outs`` folder (or its parent) with ``filtered_feature_bc_matrix.h5`` and
        ``spatial/`` (tissue positions, ``scalefactors_json.json``, images).
    image
        The full-resolution H&E; without it the hires (else lowres) PNG is used and
        the coordinates are scaled onto it.
    sample_id
        Sample id (default: the folder name).

    Returns
    -------
    StData
        In-tissue spots present in the matrix (the others dropped with a warning).
    """
    import pandas as pd

    root = _outs_dir(Path(path))
    spatial = root / "spatial"
    if not spatial.is_dir():
        msg = f"{root} has no spatial/ folder; give the Space Ranger 'outs' folder"
        raise SpatialDataError(msg)
    scalefactors = _read_scalefactors(spatial)
    positions, pos_path = _read_positions(spatial)
    counts = _read_matrix(root)
    image_path, scale, res = _choose_image(spatial, scalefactors, image)
    pos = positions.drop_duplicates("barcode").set_index("barcode")
    if len(pos) != len(positions):
        msg = (
            f"{pos_path} lists {len(positions) - len(pos)} barcode(s) twice; each "
            "barcode needs one row"
        )
        raise SpatialDataError(msg)
    in_tissue = pos.index[pos["in_tissue"] == 1]
    common = counts.obs_names.intersection(in_tissue, sort=False)
    if len(common) == 0:
        msg = (
            f"none of the {counts.n_obs} matrix barcodes is an in-tissue spot of "
            f"{pos_path}; "
            "check that the matrix and spatial/ come from the same Space Ranger run"
        )
        raise SpatialDataError(msg)
    n_no_pos, n_no_counts = counts.n_obs - len(common), len(in_tissue) - len(common)
    if n_no_pos or n_no_counts:
        warn_dropped(
            f"Visium import: {n_no_pos} of {counts.n_obs} matrix barcodes are not "
            "in-tissue "
            f"spots of {pos_path.name} and {n_no_counts} of {len(in_tissue)} in-tissue "
            "spots "
            f"have no counts; dropped them, keeping {len(common)} spots"
        )
    sub = counts[common]
    p = pos.loc[common]
    xy = p[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64) * scale
    obs = pd.DataFrame(
        {"array_row": p["array_row"].to_numpy(), "array_col": p["array_col"].to_numpy()}
    )
    adata = build_adata(
        sub.X, obs_names=common, var=sub.var.copy(), spatial_xy=xy, obs=obs
    )
    grid = pos[np.isfinite(pos[list(POSITION_COLUMNS[2:])]).all(axis=1)]
    tech = technology(VISIUM)
    name = sample_id or (root.parent.name if root.name == "outs" else root.name)
    return StData(
        adata=adata,
        st_technology=VISIUM,
        spot_diameter_um=tech.spot_diameter_um,
        inter_spot_dist_um=tech.pitch_um,
        image=image_path,
        sample_id=name,
        image_scale=scale,
        grid_xy=grid[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)
        * scale,
        grid_array_xy=grid[["array_col", "array_row"]].to_numpy(np.float64),
        sources={
            "spaceranger": str(root.resolve()),
            "matrix": counts.uns["_matrix_path"],
            "positions": str(pos_path.resolve()),
            "image": str(image_path.resolve()),
        },
        metadata={
            "scalefactors": scalefactors,
            "image_resolution": res,
            "n_barcodes_not_in_tissue": n_no_pos,
            "n_in_tissue_without_counts": n_no_counts,
        },
    )


def read_h5ad_st(
    path: str | Path,
    *,
    image: str | Path | None = None,
    sample_id: str | None = None,
) -> StData:
    """Read an AnnData ``.h5ad`` with ``obsm["spatial"]`` (full-resolution pixels).

    Raw counts are taken from ``layers["counts"]``, else ``raw.X``, else ``X``.
    ``uns["spatial"][library]["scalefactors"]`` and ``obs["array_row"/"array_col"]``
    are used when present. Without ``image``, an image reference stored in
    ``uns["napari_seal"]["image"]`` or ``uns["spatial"][lib]["metadata"]
    ["source_image_path"]`` (relative to the file) is used.

    Parameters
    ----------
    path
        The ``.h5ad`` file.
    image
        The full-resolution image the coordinates refer to.
    sample_id
        Sample id, also used to pick the ``uns["spatial"]`` library when there are
        several.

    Returns
    -------
    StData
    """
    import anndata as ad
    import pandas as pd

    path = require_file(path, role="h5ad file", flag="SOURCE")
    try:
        src = ad.read_h5ad(path)
    except READ_ERRORS as err:
        msg = (
            f"cannot read {path} as AnnData: {' '.join(str(err).split())[:200]}; the "
            "file is truncated or not an .h5ad"
        )
        raise SpatialDataError(msg) from err
    if "spatial" not in src.obsm or np.asarray(src.obsm["spatial"]).ndim != 2:
        validate_st(src, where=str(path))  # raises the obsm['spatial'] fix-it message
    libs = (
        src.uns.get("spatial", {}) if isinstance(src.uns.get("spatial"), dict) else {}
    )
    lib = sample_id if sample_id in libs else (next(iter(libs)) if libs else None)
    lib_meta = dict(libs.get(lib, {})) if lib is not None else {}
    scalefactors = {
        str(k): float(v)
        for k, v in dict(lib_meta.get("scalefactors", {})).items()
        if isinstance(v, (int, float, np.number))
    }
    try:
        xy = np.asarray(src.obsm["spatial"], dtype=np.float64)[:, :2]
    except (TypeError, ValueError) as err:
        msg = (
            f"obsm['spatial'] in {path} is not numeric; store the (x, y) level-0 pixel "
            "coordinates of the spot centres as numbers"
        )
        raise SpatialDataError(msg) from err
    if "counts" in src.layers:
        counts, var, counts_from = src.layers["counts"], src.var, "layers['counts']"
    elif src.raw is not None:
        counts, var, counts_from = src.raw.X, src.raw.var, "raw.X"
    else:
        counts, var, counts_from = src.X, src.var, "X"
    adata = build_adata(
        counts,
        obs_names=src.obs_names,
        var=var.copy(),
        spatial_xy=xy,
        obs=src.obs,
        where=f"{path.name} ({counts_from})",
    )
    ref = None
    ours = src.uns.get("napari_seal", {})
    if isinstance(ours, dict) and ours.get("image"):
        ref = ours["image"]
    elif isinstance(lib_meta.get("metadata"), dict) and lib_meta["metadata"].get(
        "source_image_path"
    ):
        ref = lib_meta["metadata"]["source_image_path"]
    image_path = None
    if image is not None:
        image_path = require_file(image, role="image", flag="--image")
    elif ref:
        cand = Path(str(ref))
        cand = cand if cand.is_absolute() else path.parent / cand
        image_path = cand if cand.is_file() else None
    tech_name = ours.get("st_technology") if isinstance(ours, dict) else None
    has_array = {"array_row", "array_col"} <= set(adata.obs.columns)
    if tech_name is None and (libs or (has_array and _is_hex(adata))):
        tech_name = VISIUM
    try:
        tech = technology(tech_name) if tech_name else None
    except SpatialDataError:
        log.info("unknown st_technology %r in %s", tech_name, path)
        tech = None
    grid_array = None
    if has_array:
        grid_array = (
            adata.obs[["array_col", "array_row"]]
            .apply(pd.to_numeric, errors="coerce")
            .to_numpy(np.float64)
        )
    # an h5ad written by napari-seal states its geometry in uns["napari_seal"]
    stated = ours if isinstance(ours, dict) else {}
    mpp = _positive(stated.get("mpp"))
    spot = _positive(stated.get("spot_diameter_um")) or (
        tech.spot_diameter_um if tech else None
    )
    dist = _positive(stated.get("inter_spot_dist_um")) or (
        tech.pitch_um if tech else None
    )
    return StData(
        adata=adata,
        st_technology=tech.name if tech else None,
        spot_diameter_um=spot,
        inter_spot_dist_um=dist,
        image=image_path,
        mpp=mpp,
        mpp_source=str(stated.get("mpp_source", "metadata")) if mpp else "unknown",
        sample_id=sample_id or file_stem(path),
        grid_xy=adata.obsm["spatial"].copy(),
        grid_array_xy=grid_array,
        sources={
            "h5ad": str(path.resolve()),
            **({"image": str(image_path.resolve())} if image_path else {}),
        },
        metadata={
            "counts_from": counts_from,
            "library_id": lib,
            **({"scalefactors": scalefactors} if scalefactors else {}),
        },
    )


def _positive(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


def _is_hex(adata: AnnData) -> bool:
    import pandas as pd

    rc = adata.obs[["array_row", "array_col"]].apply(pd.to_numeric, errors="coerce")
    rc = rc.to_numpy(np.float64)
    return bool(np.isfinite(rc).all() and np.all((rc.sum(axis=1) % 2) == 0))
