"""Legacy Spatial Transcriptomics reader: a counts table + a spot table + an image.

The counts table has one row per spot named ``"<x>x<y>"`` (integer array coordinates)
and one column per gene; the spot table has ``x y pixel_x pixel_y`` and optionally
``selected``. Nothing here depends on a dataset's file names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_seal.errors import SpatialDataError
from napari_seal.io.st.contract import (
    StData,
    build_adata,
    file_stem,
    read_table,
    require_file,
    warn_dropped,
)
from napari_seal.io.st.grid import LEGACY_ST, technology

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["read_legacy_st"]

_ID_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)x(-?\d+(?:\.\d+)?)\s*$")


def _canonical_id(spot_id: str) -> str | None:
    m = _ID_RE.match(str(spot_id))
    if m is None:
        return None
    x, y = float(m.group(1)), float(m.group(2))
    if x.is_integer() and y.is_integer():
        return f"{int(x)}x{int(y)}"
    return f"{x:g}x{y:g}"


def _spot_ids_from_index(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Return the counts table with "XxY" spot ids as rows (transposing if needed)."""
    rows = [_canonical_id(i) for i in df.index[:50]]
    if sum(r is not None for r in rows) >= max(1, len(rows) // 2):
        return df
    cols = [_canonical_id(c) for c in df.columns[:50]]
    if sum(c is not None for c in cols) >= max(1, len(cols) // 2):
        return df.T
    msg = (
        f"the counts table {path} has no 'XxY' spot ids (rows look like "
        f"{str(df.index[0])!r}); legacy ST counts need one row per spot named "
        "'<x>x<y>' from the array coordinates, and one column per gene"
    )
    raise SpatialDataError(msg)


def read_legacy_st(
    counts: str | Path,
    spots: str | Path,
    *,
    image: str | Path | None = None,
    array_pitch_um: float = 200.0,
    sample_id: str | None = None,
) -> StData:
    """Read legacy Spatial Transcriptomics tables (counts + spot selection + image).

    Parameters
    ----------
    counts
        Table (tsv/csv, optionally gzipped) with one row per spot named ``"<x>x<y>"``
        and one column per gene (raw counts).
    spots
        Table with columns ``x y pixel_x pixel_y`` and optionally ``selected``
        (1 = under the tissue; other columns are ignored).
    image
        The H&E image the pixel coordinates refer to.
    array_pitch_um
        Micrometres per array step (200 for the legacy ST array).
    sample_id
        Sample id (default: the counts file name without extensions).

    Returns
    -------
    StData
        Spots present in both tables (inner join; the others are dropped with a
        warning giving the numbers).
    """
    import pandas as pd

    counts = require_file(counts, role="counts table", flag="--counts")
    spots = require_file(spots, role="spot table", flag="--spots")
    image_path = (
        require_file(image, role="image", flag="--image") if image is not None else None
    )
    df = _spot_ids_from_index(
        read_table(counts, role="counts table", index_col=0), counts
    )
    non_numeric = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if non_numeric:
        msg = (
            f"{len(non_numeric)} gene column(s) of {counts} are not numeric (e.g. "
            f"{str(non_numeric[0])!r}); the counts table must hold numbers only"
        )
        raise SpatialDataError(msg)
    keys = pd.Index([_canonical_id(i) or f"?{i}" for i in df.index])
    if keys.duplicated().any():
        dup = df.index[keys.duplicated()][0]
        msg = (
            f"duplicate spot id {str(dup)!r} in the counts table {counts}; each spot "
            "needs one row"
        )
        raise SpatialDataError(msg)
    table = read_table(spots, role="spot table")
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in ("x", "y", "pixel_x", "pixel_y") if c not in table.columns]
    if missing:
        msg = (
            f"the spot table {spots} lacks column(s) {', '.join(missing)}; expected "
            "x y pixel_x pixel_y [selected] (array coordinates and pixel centres)"
        )
        raise SpatialDataError(msg)
    for col in ("x", "y", "pixel_x", "pixel_y"):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    grid = table[np.isfinite(table[["x", "y", "pixel_x", "pixel_y"]]).all(axis=1)]
    if "selected" in table.columns:
        table = table[pd.to_numeric(table["selected"], errors="coerce") == 1]
    if table[["x", "y"]].isna().any(axis=None):
        msg = (
            f"the spot table {spots} has empty x/y array coordinates; fill or remove "
            "those rows"
        )
        raise SpatialDataError(msg)
    spot_keys = pd.Index(
        [
            _canonical_id(f"{x:g}x{y:g}") or f"{x:g}x{y:g}"
            for x, y in zip(table["x"], table["y"], strict=True)
        ]
    )
    if spot_keys.duplicated().any():
        msg = (
            f"duplicate spot id {spot_keys[spot_keys.duplicated()][0]!r} in the spot "
            "table "
            f"{spots}; each selected spot needs one row"
        )
        raise SpatialDataError(msg)
    common = keys.intersection(spot_keys, sort=False)
    if len(common) == 0:
        msg = (
            f"the counts table and the spot table share no spot id (counts rows like "
            f"{str(df.index[0])!r}, spots like "
            f"{spot_keys[0] if len(spot_keys) else 'none'!r}"
            "); check that both files belong to the same section"
        )
        raise SpatialDataError(msg)
    n_no_counts = len(spot_keys) - len(common)
    n_no_spot = len(keys) - len(common)
    if n_no_counts or n_no_spot:
        warn_dropped(
            f"legacy-ST import: {n_no_counts} of {len(spot_keys)} selected spots have "
            "no "
            f"counts row and {n_no_spot} of {len(keys)} counts rows have no selected "
            "spot; "
            f"dropped them, keeping {len(common)} spots"
        )
    in_counts = keys.get_indexer(common)
    in_spots = spot_keys.get_indexer(common)
    sel = table.iloc[in_spots]
    obs = pd.DataFrame(
        {
            "array_row": sel["y"].to_numpy().astype(np.int64),
            "array_col": sel["x"].to_numpy().astype(np.int64),
        }
    )
    adata = build_adata(
        df.to_numpy()[in_counts],
        obs_names=df.index[in_counts],
        var=pd.DataFrame(index=df.columns.astype(str)),
        spatial_xy=sel[["pixel_x", "pixel_y"]].to_numpy(),
        obs=obs,
    )
    tech = technology(LEGACY_ST)
    return StData(
        adata=adata,
        st_technology=LEGACY_ST,
        spot_diameter_um=tech.spot_diameter_um * array_pitch_um / tech.pitch_um,
        inter_spot_dist_um=float(array_pitch_um),
        image=image_path,
        sample_id=sample_id or file_stem(counts),
        grid_xy=grid[["pixel_x", "pixel_y"]].to_numpy(np.float64),
        grid_array_xy=grid[["x", "y"]].to_numpy(np.float64),
        sources={
            "counts": str(counts.resolve()),
            "spots": str(spots.resolve()),
            **({"image": str(image_path.resolve())} if image_path else {}),
        },
        metadata={
            "n_spots_without_counts": n_no_counts,
            "n_counts_without_spot": n_no_spot,
        },
    )
