"""``read_st``: one entry point that dispatches an ST source to the reader of its kind.

The readers (:mod:`~napari_seal.io.st.visium`, :mod:`~napari_seal.io.st.legacy`,
:func:`napari_seal.io.hest.read_hest_st`) all return the contract's
:class:`~napari_seal.io.st.contract.StData`.
"""

from __future__ import annotations

from pathlib import Path

from napari_seal.errors import BadInputError
from napari_seal.io.hest import read_hest_st
from napari_seal.io.st.contract import KINDS, StData, require_file
from napari_seal.io.st.legacy import read_legacy_st
from napari_seal.io.st.visium import read_h5ad_st, read_spaceranger

__all__ = ["read_st"]


def read_st(
    kind: str,
    source: str | Path | None = None,
    *,
    image: str | Path | None = None,
    counts: str | Path | None = None,
    spots: str | Path | None = None,
    sample_id: str | None = None,
    array_pitch_um: float = 200.0,
) -> StData:
    """Read an ST source of the given kind (visium, legacy-st, h5ad, hest).

    Parameters
    ----------
    kind
        One of :data:`KINDS`.
    source
        Space Ranger folder, ``.h5ad`` file or HEST root (unused for ``legacy-st``).
    image, counts, spots, sample_id, array_pitch_um
        As for the kind's reader.

    Returns
    -------
    StData
    """
    kind = kind.lower().replace("_", "-")
    if kind in ("visium", "spaceranger"):
        return read_spaceranger(
            _require_dir(source, kind), image=image, sample_id=sample_id
        )
    if kind in ("legacy-st", "st"):
        return read_legacy_st(
            counts,
            spots,
            image=image,
            array_pitch_um=array_pitch_um,
            sample_id=sample_id,
        )
    if kind == "h5ad":
        return read_h5ad_st(
            require_file(source, role="h5ad file", flag="SOURCE"),
            image=image,
            sample_id=sample_id,
        )
    if kind == "hest":
        return read_hest_st(_require_dir(source, kind), sample_id=sample_id)
    msg = f"unknown ST source kind {kind!r}; use one of {', '.join(KINDS)}"
    raise BadInputError(msg)


def _require_dir(path: str | Path | None, kind: str) -> Path:
    if path is None or not Path(path).is_dir():
        msg = f"{kind} import needs an existing folder as SOURCE; got {path}"
        raise BadInputError(msg)
    return Path(path)
