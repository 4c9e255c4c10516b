"""The embedding store on disk: signature, creation, resume and chunk writes.

Layout (see ``docs/formats.md``, "Embedding store"): a zarr group with arrays
``embeddings``, ``tile_ids``, ``coords``, ``done`` (per chunk), ``tile_done`` (per
tile, for tiles embedded on demand) and attrs ``format``, ``grid``,
``signature``, ``precision``, ``inference``, ``dtype``, ``embed_dim``, ``chunk_tiles``,
``n_tiles``.
This module is torch-free except :func:`module_fingerprint` (imports inside).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

import napari_seal.training.runs as runs
from napari_seal.embedding.store_lock import store_write_lock
from napari_seal.embedding.tile_flags import (
    create_tile_done,
    tile_done_flags,
    write_tiles,
)
from napari_seal.errors import CacheMismatchError, OutputPathError
from napari_seal.io.workspace import workspace_root

__all__ = [
    "STORE_FORMAT",
    "StoreWriter",
    "build_signature",
    "encoder_precision",
    "first_mismatch",
    "grid_from_attrs",
    "module_fingerprint",
    "open_or_create_store",
    "sha256_file",
    "tile_done_flags",
]

log = logging.getLogger(__name__)

STORE_FORMAT = "napari-seal.embeddings/1"
_GRID_ARRAYS = ("tile_ids", "coords", "tissue_fraction")
_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike, *, cache: bool = True) -> str:
    """Return the sha256 of a file, cached by (resolved path, size, mtime).

    The cache lives in memory and in the workspace's ``sha256.json``
    (``napari_seal.io.workspace``), so a multi-GB weight file is hashed once.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _HASH_MEMO:
        return _HASH_MEMO[key]
    disk_key = f"{key[0]}|{key[1]}|{key[2]}"
    cache_file = workspace_root() / "sha256.json"
    table: dict[str, str] = {}
    if cache and cache_file.is_file():
        try:
            table = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            table = {}
        if disk_key in table:
            _HASH_MEMO[key] = table[disk_key]
            return table[disk_key]
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    _HASH_MEMO[key] = digest
    if cache:
        table[disk_key] = digest
        try:
            from napari_seal.io.atomic import atomic_write_text

            atomic_write_text(cache_file, json.dumps(table))
        except OSError as err:  # a cache we cannot write only costs time
            log.debug("cannot write the hash cache %s: %s", cache_file, err)
    return digest


def module_fingerprint(module: Any) -> str:
    """Return a sha256 over a torch module's state dict (names, shapes, bytes)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def encoder_precision(encoder: Any, device: Any = None, precision: str = "auto") -> str:
    """Return the precision inference runs in: ``"fp32"``, ``"bf16"`` or ``"fp16"``."""
    from napari_seal.models.inference import inference_precision

    return inference_precision(encoder, device, precision=precision)


def _release(version: str) -> str:
    """``"0.1.1.dev3+gabc"`` -> ``"0.1.1"``: dev rebuilds keep their caches."""
    match = re.match(r"\d+(\.\d+)*", version)
    return match.group(0) if match else version


def _jsonable(obj: Any) -> Any:
    """Normalise ``obj`` to what a JSON round trip gives back."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, os.PathLike):
            return str(o)
        if is_dataclass(o):
            return asdict(o)
        return str(o)

    return json.loads(json.dumps(obj, default=default))


def build_signature(
    slide: Any,
    resolved: Any,
    config: Any,
    *,
    max_tiles: int | None,
    dtype: str,
    device: Any = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Return what identifies an embedding store's inputs.

    Parameters
    ----------
    slide
        The slide (its ``identity()``, size and pixel size).
    resolved
        A :class:`napari_seal.embedding.run.ResolvedEncoder`.
    config
        The tiling config.
    max_tiles
        The tile budget, if any.
    dtype
        Storage dtype of the embeddings.
    device
        Where inference runs (decides the precision on CPU vs GPU).
    precision
        The inference precision, or ``"auto"`` to resolve it for ``device``.

    Returns
    -------
    dict
        JSON-able, compared key by key on resume.
    """
    from napari_seal import __version__

    encoder = resolved.encoder
    weights = getattr(encoder, "weights", None)
    if weights is not None and Path(weights).is_file():
        weights_hash = sha256_file(weights)
    else:
        weights_hash = "module:" + module_fingerprint(encoder.module)
    adapter_hash = None
    if resolved.run_path is not None:
        adapter_hash = runs.adapter_hash(resolved.run_path)
        if adapter_hash is None:
            adapter_hash = "module:" + module_fingerprint(encoder.module)
    ident = dict(slide.identity())
    ident.update(
        width_px=int(slide.width_px),
        height_px=int(slide.height_px),
        mpp=float(slide.mpp),
    )
    config_dict = asdict(config) if is_dataclass(config) else dict(config)
    sig = {
        "format": STORE_FORMAT,
        "slide": ident,
        "encoder": {
            "name": str(getattr(encoder, "name", resolved.label)),
            "source": resolved.label,
            "embed_dim": int(encoder.embed_dim),
            "tile_px": int(encoder.tile_px),
            "mpp": float(encoder.mpp),
            "weights_sha256": weights_hash,
            "adapter_sha256": adapter_hash,
            "precision": encoder_precision(encoder, device, precision),
        },
        "tiling": config_dict,
        "max_tiles": None if max_tiles is None else int(max_tiles),
        "dtype": dtype,
        "package_version": _release(__version__),
    }
    return _jsonable(sig)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def first_mismatch(old: dict, new: dict) -> tuple[str, Any, Any] | None:
    """Return ``(dotted key, old value, new value)`` of the first difference."""
    a, b = _flatten(old), _flatten(new)
    for key in list(b) + [k for k in a if k not in b]:
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            return key, a.get(key, "<missing>"), b.get(key, "<missing>")
    return None


def grid_to_attrs(grid: Any) -> dict[str, Any]:
    """``grid.to_dict()`` without the per-tile arrays (stored as zarr arrays)."""
    d = dict(grid.to_dict())
    for name in _GRID_ARRAYS:
        d.pop(name, None)
    return _jsonable(d)


def grid_from_attrs(
    attrs: dict,
    tile_ids: np.ndarray,
    coords: np.ndarray,
    tissue_fraction: np.ndarray | None = None,
) -> Any:
    """Rebuild the :class:`~napari_seal.tiling.grid.TileGrid` of a store."""
    from napari_seal.tiling.grid import TileGrid

    d = dict(attrs)
    d["tile_ids"] = np.asarray(tile_ids, dtype=np.int64)
    d["coords"] = np.asarray(coords, dtype=np.int64)
    if tissue_fraction is not None:
        d["tissue_fraction"] = np.asarray(tissue_fraction, dtype=np.float32)
    return TileGrid.from_dict(d)


class StoreWriter:
    """Write embedding chunks and their ``done`` flags into an open store."""

    def __init__(self, group: Any, path: Path) -> None:
        self.group = group
        self.path = path
        self.embeddings = group["embeddings"]
        self.done = group["done"]
        self.n_tiles = int(group.attrs["n_tiles"])
        self.chunk_tiles = int(group.attrs["chunk_tiles"])
        self.n_chunks = int(self.done.shape[0])
        # per-tile flags (tiles embedded on demand, e.g. the viewer's field of view);
        # a tile is done when its chunk's flag or its own is set. Stores made before
        # the flags existed get them on their first writable opening.
        if "tile_done" not in group:
            create_tile_done(group, self.n_tiles)
        self.tile_done = group["tile_done"]

    def tiles_done(self) -> np.ndarray:
        """``(n_tiles,)`` bool: embedded, by its chunk's flag or by its own."""
        return tile_done_flags(self.group, self.n_tiles, self.chunk_tiles)

    def write_tiles(self, index: np.ndarray, embeddings: np.ndarray) -> None:
        """Write single tiles, then their flags (:func:`~napari_seal.embedding.
        tile_flags.write_tiles`), under the store's write lock."""
        with store_write_lock(self.path):
            write_tiles(self, index, embeddings)

    def todo_chunks(self) -> list[int]:
        """Chunks whose ``done`` flag is not set, in order."""
        return [int(i) for i in np.flatnonzero(~np.asarray(self.done[:], dtype=bool))]

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        """First and one-past-last tile index of ``chunk``."""
        c0 = chunk * self.chunk_tiles
        return c0, min(self.n_tiles, c0 + self.chunk_tiles)

    def tiles_in(self, chunks: list[int]) -> int:
        """Number of tiles in ``chunks``."""
        return sum(b - a for a, b in map(self.chunk_range, chunks))

    def record_inference(self, info: dict[str, Any]) -> None:
        """Keep how this run computed (precision, memory format, compile time)."""
        try:
            self.group.attrs["inference"] = _jsonable(info)
        except OSError as err:  # the embeddings matter, this note does not
            log.warning(
                "cannot record the inference settings in %s: %s", self.path, err
            )

    def write_chunk(self, chunk: int, embeddings: np.ndarray) -> None:
        """Write one chunk's embeddings, then (only then) its ``done`` flag.

        Under the store's write lock (:mod:`~napari_seal.embedding.store_lock`): a
        tile write of another thread or process never interleaves with it.
        """
        c0, c1 = self.chunk_range(chunk)
        if embeddings.shape != (c1 - c0, self.embeddings.shape[1]):
            msg = (
                f"chunk {chunk}: got embeddings of shape {embeddings.shape}, "
                f"expected {(c1 - c0, self.embeddings.shape[1])}"
            )
            raise RuntimeError(msg)
        try:
            with store_write_lock(self.path):
                self.embeddings[c0:c1] = embeddings.astype(
                    self.embeddings.dtype, copy=False
                )
                self.done[chunk] = True
        except OutputPathError:
            raise
        except OSError as err:
            done = self.n_chunks - len(self.todo_chunks())
            msg = (
                f"cannot write the embedding store {self.path}: {err.strerror or err}; "
                f"{done} of {self.n_chunks} chunks are kept: free disk space (or fix "
                "permissions) and rerun the same command to resume"
            )
            raise OutputPathError(msg) from err


def _is_store(path: Path) -> bool:
    return (path / "zarr.json").is_file() or (path / ".zgroup").is_file()


def _create_arrays(
    group: Any, *, grid: Any, embed_dim: int, chunk_tiles: int, dtype: str
) -> None:
    n = len(grid.tile_ids)
    n_chunks = max(1, -(-n // chunk_tiles))
    group.create_array(
        "embeddings",
        shape=(n, embed_dim),
        chunks=(chunk_tiles, embed_dim),
        dtype=dtype,
        fill_value=np.nan,
        overwrite=True,
    )
    group.create_array(
        "tile_ids",
        data=np.asarray(grid.tile_ids, dtype=np.int64),
        chunks=(max(1, min(n, 1 << 16)),),
        overwrite=True,
    )
    group.create_array(
        "coords",
        data=np.asarray(grid.coords, dtype=np.int64),
        chunks=(max(1, min(n, 1 << 16)), 2),
        overwrite=True,
    )
    frac = getattr(grid, "tissue_fraction", None)
    if frac is not None:
        group.create_array(
            "tissue_fraction",
            data=np.asarray(frac, dtype=np.float32),
            chunks=(max(1, min(n, 1 << 16)),),
            overwrite=True,
        )
    create_tile_done(group, n)
    # written last: its presence means the store's arrays are all there
    group.create_array(
        "done",
        shape=(n_chunks,),
        chunks=(min(n_chunks, 4096),),
        dtype=bool,
        fill_value=False,
        overwrite=True,
    )


def open_or_create_store(
    path: str | os.PathLike,
    *,
    signature: dict,
    grid: Any,
    embed_dim: int,
    chunk_tiles: int,
    dtype: str,
    precision: str,
    inference: dict[str, Any] | None = None,
) -> StoreWriter:
    """Open a store with the same signature to resume, or create a new one.

    Raises
    ------
    CacheMismatchError
        The store's signature differs (names the first differing key).
    OutputPathError
        The path cannot be written or is something else than a store.
    """
    import zarr

    from napari_seal.io.atomic import checked_output_path, ensure_writable_dir

    path = checked_output_path(path)
    try:
        exists = path.exists()
    except OSError as err:
        msg = f"cannot access {path}: {err}; choose another --out"
        raise OutputPathError(msg) from err
    if exists and not _is_store(path):
        if path.is_dir() and not any(path.iterdir()):
            exists = False
        else:
            msg = (
                f"{path} exists and is not an embedding store; choose another --out "
                "or delete it"
            )
            raise OutputPathError(msg)
    try:
        if exists:
            if not os.access(path, os.W_OK):
                msg = (
                    f"embedding store {path} is not writable; fix its permissions or "
                    "choose another --out"
                )
                raise OutputPathError(msg)
            group = zarr.open_group(path, mode="r+")
            old = dict(group.attrs).get("signature")
            if old is None:
                msg = (
                    f"{path} is a zarr store without a napari-seal signature; choose "
                    "another --out or delete it"
                )
                raise CacheMismatchError(msg)
            diff = first_mismatch(old, signature)
            if diff is not None:
                key, was, now = diff
                msg = (
                    f"embedding store {path} was made with {key}={was!r} but this run "
                    f"has {key}={now!r}; write to a new --out or delete the store to "
                    "start over"
                )
                raise CacheMismatchError(msg)
            if "done" not in group or "embeddings" not in group:  # crashed at creation
                _create_arrays(
                    group,
                    grid=grid,
                    embed_dim=embed_dim,
                    chunk_tiles=int(group.attrs["chunk_tiles"]),
                    dtype=dtype,
                )
            return StoreWriter(group, path)
        ensure_writable_dir(path.parent)
        attrs = {
            "format": STORE_FORMAT,
            "signature": signature,
            "grid": grid_to_attrs(grid),
            "precision": precision,
            "inference": _jsonable(inference or {"precision": precision}),
            "dtype": dtype,
            "embed_dim": int(embed_dim),
            "chunk_tiles": int(chunk_tiles),
            "n_tiles": len(grid.tile_ids),
        }
        group = zarr.create_group(path, attributes=attrs, zarr_format=3)
        _create_arrays(
            group, grid=grid, embed_dim=embed_dim, chunk_tiles=chunk_tiles, dtype=dtype
        )
        return StoreWriter(group, path)
    except OutputPathError:
        raise
    except OSError as err:
        msg = (
            f"cannot write the embedding store {path}: {err.strerror or err}; choose "
            "another --out, free disk space or fix permissions"
        )
        raise OutputPathError(msg) from err
