"""Recognise what a path holds (slide, HEST sample, Space Ranger folder, h5ad).

Only looks at names and, for TIFF/JPEG/PNG, at the first bytes: it never decodes
pixels, so the napari reader can answer "not mine" instantly.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SLIDE_SUFFIXES", "sniff"]

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".jpg", ".jpeg", ".png", ".scn",
                  ".mrxs", ".bif", ".vms")

_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"\xff\xd8\xff",
          b"\x89PNG")


def _is_hest_dir(path: Path) -> bool:
    return (path / "st").is_dir() and (path / "wsis").is_dir()


def _is_spaceranger_dir(path: Path) -> bool:
    has_matrix = any(
        (path / name).exists()
        for name in ("filtered_feature_bc_matrix.h5", "filtered_feature_bc_matrix")
    )
    return has_matrix and (path / "spatial").is_dir()


def sniff(path: str | Path) -> str | None:
    """Return ``"hest"``, ``"visium"``, ``"h5ad"``, ``"slide"`` or ``None``.

    Parameters
    ----------
    path
        A file or folder.

    Examples
    --------
    >>> sniff("does-not-exist.txt") is None
    True
    """
    path = Path(path)
    if path.is_dir():
        if _is_hest_dir(path):
            return "hest"
        if _is_spaceranger_dir(path):
            return "visium"
        if (path / "outs").is_dir() and _is_spaceranger_dir(path / "outs"):
            return "visium"
        return None
    if not path.is_file():
        return None
    name = path.name.lower()
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith(SLIDE_SUFFIXES):
        try:
            with path.open("rb") as fh:
                head = fh.read(8)
        except OSError:
            return None
        if name.endswith((".mrxs", ".vms", ".scn", ".bif")) or head.startswith(_MAGIC):
            return "slide"
    return None
