"""Format detection and dispatch behind :func:`napari_seal.io.slide.core.open_slide`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_seal.errors import SlideReadError

__all__ = ["OpenedLevels", "file_identity", "open_levels", "sniff_format"]

#: Extensions only OpenSlide reads (TIFF-based formats go to tifffile).
OPENSLIDE_ONLY = {".mrxs", ".vms", ".vmu", ".bif", ".svslide", ".dcm"}


@dataclass
class OpenedLevels:
    """The level sources and facts found when opening a slide file."""

    sources: list[Any]
    kind: str
    mpp: float | None
    identity: dict
    handle: Any = None
    downsamples: list[float] | None = None
    metadata: dict = field(default_factory=dict)


def sniff_format(path: Path) -> str | None:
    """``"jpeg"``, ``"png"``, ``"tiff"`` from the file's magic bytes, else ``None``."""
    with path.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


def file_identity(path: Path) -> dict:
    """``{"path": resolved str, "size": bytes, "mtime": float}`` of a file."""
    st = path.stat()
    return {
        "path": str(path.resolve()),
        "size": int(st.st_size),
        "mtime": float(st.st_mtime),
    }


def open_levels(path: Path, *, cache_dir: Path | None) -> OpenedLevels:
    """Validate ``path`` and open its pyramid levels with the right backend.

    Raises
    ------
    SlideReadError
        Missing, empty, unreadable or unsupported files (and the backends' errors).
    """
    if not path.exists():
        msg = f"slide file not found: {path}; check the path (relative to {Path.cwd()})"
        raise SlideReadError(msg)
    if path.is_dir():
        msg = (
            f"{path} is a folder; pass the slide image file itself (a HEST sample "
            "folder is opened with napari_seal.open_path)"
        )
        raise SlideReadError(msg)
    try:
        identity = file_identity(path)
        sniffed = sniff_format(path)
    except OSError as err:
        msg = f"cannot read {path}: {err.strerror or err}; check its permissions"
        raise SlideReadError(msg) from err
    if identity["size"] == 0:
        msg = f"{path} is empty (0 bytes); copy or download it again"
        raise SlideReadError(msg)
    if sniffed in ("jpeg", "png"):
        from napari_seal.io.slide.flat import open_flat_levels

        sources, folder = open_flat_levels(
            path, kind=sniffed, identity=identity, cache_dir=cache_dir
        )
        return OpenedLevels(
            sources, sniffed, None, identity, metadata={"cache": str(folder)}
        )
    from napari_seal.io.slide.openslide_backend import have_openslide

    if sniffed == "tiff" and path.suffix.lower() not in OPENSLIDE_ONLY:
        from napari_seal.io.slide.tiff import TiffUnreadableError, open_tiff_levels

        try:
            info = open_tiff_levels(path)
        except TiffUnreadableError as err:
            if not have_openslide():
                raise
            try:  # a TIFF variant tifffile cannot parse or decode: OpenSlide's turn
                return _open_with_openslide(path, identity)
            except SlideReadError:
                raise err from None
        return OpenedLevels(
            info.levels,
            info.kind,
            info.mpp,
            identity,
            info.handle,
            metadata=dict(info.metadata),
        )
    if not have_openslide():
        msg = (
            f"{path} is not a TIFF, JPEG or PNG image; other slide formats (MRXS, VMS, "
            "BIF...) need OpenSlide: pip install 'napari-seal[openslide]', or convert "
            "the slide to a pyramidal TIFF"
        )
        raise SlideReadError(msg)
    return _open_with_openslide(path, identity)


def _open_with_openslide(path: Path, identity: dict) -> OpenedLevels:
    from napari_seal.io.slide.openslide_backend import open_openslide_levels

    sources, mpp, handle = open_openslide_levels(path)
    return OpenedLevels(
        sources,
        "openslide",
        mpp,
        identity,
        handle,
        downsamples=[s.downsample for s in sources],
    )
