"""Inputs of :mod:`napari_seal.embedding.run`: slide, encoder or run, tiling.

Re-exported by :mod:`napari_seal.embedding`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.embedding.store import build_signature
from napari_seal.errors import BadInputError, EncoderMismatchError
from napari_seal.io.workspace import workspace_path

__all__ = [
    "ResolvedEncoder",
    "default_store_path",
    "limit_grid",
    "resolve_encoder",
    "resolve_slide",
    "tiling_for",
]


@dataclass
class ResolvedEncoder:
    """An encoder ready to embed, with what identifies it in a store signature.

    Parameters
    ----------
    encoder
        The :class:`napari_seal.models.factory.Encoder` (LoRA merged for runs).
    label
        Human-readable name (``"test-vit"``, ``"run:/path/to/run"``).
    run_path
        The SEAL run folder when the encoder comes from a run.
    run
        The loaded run object, when any.
    """

    encoder: Any
    label: str
    run_path: Path | None = None
    run: Any = None


def _hest_slide(root: Path) -> Any:
    """The slide of a one-sample HEST folder with its metadata pixel size, or None.

    Opens ``wsis/<id>.*`` directly: embedding needs no expression table, and reading
    a large AnnData (h5py holds the GIL) would stall a viewer. Folders this cannot
    settle (several samples, no pixel size in the metadata) return None.
    """
    import json

    from napari_seal.io.hest import hest_ids, is_hest_dir, mpp_from_metadata
    from napari_seal.io.slide.core import open_slide

    ids = hest_ids(root) if is_hest_dir(root) else []
    if len(ids) != 1:
        return None
    wsis = sorted((root / "wsis").glob(f"{ids[0]}.*"))
    meta = root / "metadata" / f"{ids[0]}.json"
    if len(wsis) != 1 or not meta.is_file():
        return None
    try:
        meta_mpp, source = mpp_from_metadata(json.loads(meta.read_text("utf-8")))
    except (OSError, ValueError, AttributeError):
        return None
    if meta_mpp is None:
        return None
    return open_slide(wsis[0]).with_mpp(float(meta_mpp), source=source)


def resolve_slide(source: Any, *, mpp: float | None = None) -> Any:
    """Return the :class:`~napari_seal.io.slide.core.Slide` behind ``source``.

    Parameters
    ----------
    source
        A ``Slide``, a :class:`~napari_seal.io.sample.SpatialSample`, or a path to a
        slide file or a HEST sample folder.
    mpp
        Pixel size override in micrometres per level-0 pixel.

    Returns
    -------
    The slide, with a pixel size (``MppUnknownError`` otherwise).
    """
    from napari_seal.io.sample import SpatialSample

    if isinstance(source, SpatialSample):
        slide = source.slide
        if source.mpp and slide.mpp != source.mpp:  # the sample's pixel size wins
            slide = slide.with_mpp(float(source.mpp), source=source.mpp_source)
    elif isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.exists():
            msg = f"{path} does not exist; pass a slide file or a sample folder"
            raise BadInputError(msg)
        slide = _hest_slide(path) if path.is_dir() else None
        if slide is None and (path.is_dir() or path.suffix == ".h5ad"):
            from napari_seal.io.hest import load_sample

            slide = load_sample(path, mpp=mpp).slide
        elif slide is None:
            from napari_seal.io.slide.core import open_slide

            slide = open_slide(path, mpp=mpp)
    else:
        slide = source
    if mpp is not None and slide.mpp != mpp:
        slide = slide.with_mpp(float(mpp), source="user")
    slide.require_mpp()
    return slide


def resolve_encoder(
    encoder_or_run: Any, *, device: str | None = None
) -> ResolvedEncoder:
    """Turn an encoder name, ``Encoder``, run folder or loaded run into an encoder.

    Parameters
    ----------
    encoder_or_run
        A registry name (``"default"``, ``"test-vit"``...), an ``Encoder``, a
        :class:`ResolvedEncoder`, a run folder (path) or a loaded ``SealRun``.
    device
        Device to build a named encoder on.

    Returns
    -------
    ResolvedEncoder
    """
    if isinstance(encoder_or_run, ResolvedEncoder):
        return encoder_or_run
    if isinstance(encoder_or_run, str) and not Path(encoder_or_run).is_dir():
        from napari_seal.models.factory import create_encoder

        enc = create_encoder(encoder_or_run, device=device)
        return ResolvedEncoder(enc, label=str(encoder_or_run))
    if isinstance(encoder_or_run, str | os.PathLike):
        from napari_seal.training.runs import load_run

        path = Path(encoder_or_run)
        run = load_run(path)
        return ResolvedEncoder(
            run.encoder, label=f"run:{path.resolve()}", run_path=path.resolve(), run=run
        )
    if hasattr(encoder_or_run, "module") and hasattr(encoder_or_run, "transform"):
        return ResolvedEncoder(encoder_or_run, label=str(encoder_or_run.name))
    if hasattr(encoder_or_run, "encoder"):
        run = encoder_or_run
        run_path = getattr(run, "path", None)
        run_path = Path(run_path).resolve() if run_path is not None else None
        label = f"run:{run_path}" if run_path else f"run:{run.encoder.name}"
        return ResolvedEncoder(run.encoder, label=label, run_path=run_path, run=run)
    msg = (
        f"cannot use {type(encoder_or_run).__name__} as an encoder; pass an encoder "
        "name (see `napari-seal info`), an Encoder, or a SEAL run folder"
    )
    raise BadInputError(msg)


def tiling_for(encoder: Any, tiling: Any = None, **overrides: Any) -> Any:
    """Return the tiling config of ``encoder`` (its tile size and pixel size).

    Parameters
    ----------
    encoder
        The encoder.
    tiling
        A :class:`~napari_seal.tiling.grid.TilingConfig` to start from (its ``tile_px``
        must equal the encoder's).
    **overrides
        Fields to replace (``stride_px``, ``tissue_threshold``...); ``None`` values
        are ignored.

    Returns
    -------
    TilingConfig
    """
    from napari_seal.tiling.config import TilingConfig

    if tiling is None:
        tiling = TilingConfig(tile_px=int(encoder.tile_px), mpp=float(encoder.mpp))
    elif int(tiling.tile_px) != int(encoder.tile_px):
        msg = (
            f"tiling tile_px={tiling.tile_px} does not fit encoder {encoder.name!r}, "
            f"which takes {encoder.tile_px} px tiles; drop the tiling override or use "
            f"tile_px={encoder.tile_px}"
        )
        raise EncoderMismatchError(msg)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(tiling, **overrides) if overrides else tiling


def limit_grid(grid: Any, max_tiles: int) -> Any:
    """Keep the first ``max_tiles`` tissue tiles of ``grid`` (a tile budget)."""
    n = len(grid.tile_ids)
    if max_tiles >= n:
        return grid
    changes = {}
    for name in getattr(grid, "__dataclass_fields__", {}):
        value = getattr(grid, name)
        if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == n:
            changes[name] = value[:max_tiles]
    return replace(grid, **changes)


def default_store_path(
    slide: Any,
    resolved: ResolvedEncoder,
    *,
    tiling: Any = None,
    max_tiles: int | None = None,
) -> Path:
    """The workspace embedding store of ``slide`` with ``resolved``'s encoder.

    ``<workspace>/stores/<slide name>-<hash>.zarr``
    (:func:`napari_seal.io.workspace.workspace_path`), where the hash covers the store
    signature: slide identity (path, size, mtime), encoder weights and adapters, and
    tiling. A retrained run or a changed slide gets a new store; the same slide and
    model always get the same one, so every command and widget that embeds without a
    named store shares and resumes it. Never beside the inputs, never in the package.

    Parameters
    ----------
    slide
        An opened slide (:func:`resolve_slide`).
    resolved
        The encoder or run (:func:`resolve_encoder`).
    tiling
        The tiling (default: :func:`tiling_for` the encoder).
    max_tiles
        The tile budget the store is made with (``None``: every tissue tile).
    """
    sig = build_signature(
        slide,
        resolved,
        tiling if tiling is not None else tiling_for(resolved.encoder),
        max_tiles=max_tiles,
        dtype="float32",
    )
    name = Path(str(getattr(slide, "path", None) or "slide")).stem or "slide"
    return workspace_path("stores", name=name, key=sig, suffix=".zarr")
