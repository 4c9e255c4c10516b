"""Whole-slide embedding into a resumable zarr store.

:func:`iter_embed` tiles a slide at the encoder's patch size and pixel size, reads
tiles in chunks, runs them through the encoder and writes one embedding per tile id
into a zarr group (layout in ``docs/formats.md``, section "Embedding store"):

- ``embeddings`` (n_tiles, D) float32 (or float16), ``tile_ids`` (n_tiles,) int64,
  ``coords`` (n_tiles, 2) int64 level-0 ``(x, y)`` top-left, ``done`` (n_chunks,) bool;
- attrs ``grid``, ``signature``, ``precision``, ``inference`` (precision, memory
  format, compiled, compile and warm-up seconds), ``embed_dim``, ``chunk_tiles``.

A chunk's ``done`` flag is written only after its embeddings, so an interrupted run
resumes where it stopped, and a store made from other inputs is refused with a
:class:`~napari_seal.errors.CacheMismatchError` naming the first differing key.

Tile reading and decoding run in a small thread pool that prefetches a bounded
number of batches ahead of the model, so I/O hides behind compute and memory does not
grow with the slide. With ``scheduler=ADDRESS`` the same chunk tasks run on a
``dask.distributed`` cluster (:mod:`napari_seal.embedding.distributed`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from napari_seal.embedding.inputs import (
    limit_grid,
    resolve_encoder,
    resolve_slide,
    tiling_for,
)
from napari_seal.embedding.store import (
    StoreWriter,
    build_signature,
    open_or_create_store,
)
from napari_seal.errors import BadInputError
from napari_seal.io.atomic import checked_output_path
from napari_seal.progress import Progress

__all__ = [
    "auto_read_workers",
    "embed",
    "iter_embed",
]

log = logging.getLogger(__name__)

# how many batches the reader threads may hold ahead of the model
DEFAULT_PREFETCH_BATCHES = 3
# niceness of the reader threads (see _lower_thread_priority)
READER_NICE = 10


def _encode_fn(
    encoder: Any, *, batch_size: int, device: str | None, session: Any
) -> Callable[[np.ndarray], np.ndarray]:
    """Return ``f(uint8 tiles) -> (n, D) float32`` for ``encoder`` (a test seam).

    ``session`` is the prepared :class:`~napari_seal.models.inference.
    InferenceSession` (plan, memory format, compiled module) that does the work.
    """
    return session


def _batches(
    todo: list[int], *, n_tiles: int, chunk_tiles: int, batch_size: int
) -> Iterator[tuple[int, int, int]]:
    """Yield ``(chunk, start, stop)`` tile ranges, chunk by chunk, batch by batch."""
    for chunk in todo:
        c0 = chunk * chunk_tiles
        c1 = min(n_tiles, c0 + chunk_tiles)
        for start in range(c0, c1, batch_size):
            yield chunk, start, min(c1, start + batch_size)


def auto_read_workers(device_type: str, torch_threads: int) -> int:
    """Reader threads for ``embed`` when none are asked for.

    On the CPU the model's ``torch_threads`` already use the cores; a reader thread
    beyond the cores left over only preempts them (2-core AVX512-BF16 machine,
    ``benchmarks/bench_read_workers.py``: 1 reader 129.4 tiles/s mean vs 2 readers
    125.0, faster in 4 of 4 interleaved rounds), so one reader per free core, at
    least one, at most 4. On a GPU the host only reads and decodes: every core but
    one, at most 8 (decoding must keep up with ~1,000 tiles/s there).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    if device_type == "cpu":
        return max(1, min(4, cores - max(1, int(torch_threads))))
    return max(2, min(8, cores - 1))


def _lower_thread_priority() -> None:
    """Nice a reader thread (Linux: per thread) so it yields to the model's threads.

    Reading needs a few percent of the CPU; at normal priority it preempts the
    model's OpenMP threads, which then wait for each other at every barrier.
    """
    import threading

    # not Linux, or not allowed: keep the normal priority
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), READER_NICE)


def _run_local(
    slide: Any,
    grid: Any,
    writer: StoreWriter,
    todo: list[int],
    *,
    encode: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
    prefetch_batches: int,
    read_workers: int,
) -> Generator[tuple[int, int], None, None]:
    """Embed the ``todo`` chunks with a bounded reader pool; yield (tiles, chunks)."""
    from napari_seal.tiling.grid import read_tiles

    n_tiles = writer.n_tiles
    chunk_tiles = writer.chunk_tiles
    batches = _batches(
        todo, n_tiles=n_tiles, chunk_tiles=chunk_tiles, batch_size=batch_size
    )
    pool = ThreadPoolExecutor(
        max_workers=read_workers,
        thread_name_prefix="napari-seal-read",
        initializer=_lower_thread_priority,
    )
    pending: deque[tuple[tuple[int, int, int], np.ndarray, Future | None]] = deque()
    # tiles already embedded on demand (per-tile flags) are kept, not recomputed
    have = writer.tiles_done()
    dim = int(writer.embeddings.shape[1])

    def submit_next() -> None:
        item = next(batches, None)
        if item is not None:
            index = np.arange(item[1], item[2])
            index = index[~have[index]]
            fut = pool.submit(read_tiles, slide, grid, index) if index.size else None
            pending.append((item, index, fut))

    buf: np.ndarray | None = None
    try:
        for _ in range(max(1, prefetch_batches)):
            submit_next()
        while pending:
            (chunk, start, stop), index, fut = pending.popleft()
            tiles = fut.result() if fut is not None else None
            submit_next()
            emb = encode(tiles) if tiles is not None else None
            c0 = chunk * chunk_tiles
            c1 = min(n_tiles, c0 + chunk_tiles)
            if buf is None or buf.shape[0] != c1 - c0:
                buf = np.empty((c1 - c0, dim), dtype=np.float32)
            if start == c0 and have[c0:c1].any():
                buf[:] = np.asarray(writer.embeddings[c0:c1], dtype=np.float32)
            if emb is not None:
                buf[index - c0] = emb
            if stop == c1:
                writer.write_chunk(chunk, buf)
                yield stop - start, 1
            else:
                yield stop - start, 0
    finally:
        for *_, fut in pending:
            if fut is not None:
                fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def iter_embed(
    source: Any,
    encoder_or_run: Any,
    store: str | os.PathLike,
    *,
    batch_size: int = 64,
    tiling: Any = None,
    device: str | None = None,
    scheduler: Any = None,
    mpp: float | None = None,
    stride_px: int | None = None,
    tissue_threshold: float | None = None,
    max_tiles: int | None = None,
    chunk_tiles: int | None = None,
    dtype: str = "float32",
    prefetch_batches: int = DEFAULT_PREFETCH_BATCHES,
    read_workers: int | None = None,
    scheduler_timeout_s: float = 10.0,
    precision: str = "auto",
    memory_format: str = "auto",
    compile: bool = False,
) -> Generator[Progress, None, Path]:
    """Embed every tissue tile of a slide into a zarr store; yield progress.

    Parameters
    ----------
    source
        A ``Slide``, a ``SpatialSample``, or a path to a slide or a HEST sample folder.
    encoder_or_run
        An encoder name, an ``Encoder``, a SEAL run folder or a loaded run.
    store
        Path of the zarr store to create or resume (``*.zarr``).
    batch_size
        Tiles per forward pass.
    tiling
        Tiling config; default: the encoder's tile size and pixel size, no overlap.
    device
        ``"cpu"``, ``"cuda"``, ``"mps"`` (default: the encoder's).
    scheduler
        ``dask.distributed`` scheduler address (or a ``Client``) to run the chunk
        tasks on a cluster; ``None`` runs locally with a thread pool for reading.
    mpp
        Slide pixel size override in micrometres per level-0 pixel.
    stride_px, tissue_threshold
        Overrides of the tiling config (stride in tile pixels; tissue threshold).
    max_tiles
        Tile budget: embed only the first ``max_tiles`` tissue tiles (part of the
        signature).
    chunk_tiles
        Tiles per store chunk for a new store (default ``8 * batch_size``); a resumed
        store keeps its own.
    dtype
        Storage dtype of the embeddings, ``"float32"`` or ``"float16"``.
    prefetch_batches
        Batches read ahead of the model (bounds memory).
    read_workers
        Reader threads (default: :func:`auto_read_workers` for the device and the
        torch threads).
    scheduler_timeout_s
        How long to wait for a scheduler to answer.
    precision
        ``"auto"`` (bf16 where the device runs it natively, else fp32; see
        :mod:`napari_seal.models.precision`), ``"fp32"``, ``"bf16"`` or ``"fp16"``
        (CUDA). Part of the signature: a store is resumed in its own precision.
    memory_format
        ``"auto"`` (channels_last for convolutional encoders), ``"contiguous"`` or
        ``"channels_last"``.
    compile
        Run the encoder through ``torch.compile`` (compile time in the store's
        ``inference`` attrs and in the progress messages).

    Yields
    ------
    Progress
        ``stage="embed"``, ``unit="tiles"``; ``info`` has ``tiles_per_s``,
        ``chunks_done``, ``n_chunks`` and ``eta_s``.

    Returns
    -------
    Path
        The store path.

    Raises
    ------
    CacheMismatchError
        The store exists and was made from other inputs.
    OutputPathError
        The store cannot be written.
    BadInputError
        No tissue tiles, or the encoder's tile does not fit the slide.
    """
    if batch_size < 1:
        msg = f"batch size must be at least 1, got {batch_size}"
        raise BadInputError(msg)
    if read_workers is not None and int(read_workers) < 1:
        msg = f"read_workers must be at least 1 (or None: auto), got {read_workers}"
        raise BadInputError(msg)
    if dtype not in ("float32", "float16"):
        msg = f"embedding dtype must be float32 or float16, got {dtype!r}"
        raise BadInputError(msg)
    store = checked_output_path(store)
    slide = resolve_slide(source, mpp=mpp)
    resolved = resolve_encoder(encoder_or_run, device=device)
    encoder = resolved.encoder
    from napari_seal.models.inference import InferenceSession

    session = InferenceSession(
        encoder,
        batch_size=batch_size,
        device=device,
        precision=precision,
        memory_format=memory_format,
        compile=compile,
    )
    plan = session.plan
    config = tiling_for(
        encoder, tiling, stride_px=stride_px, tissue_threshold=tissue_threshold
    )
    yield Progress("embed", 0, None, "tiles", message="finding tissue tiles")

    from napari_seal.tiling.grid import make_tile_grid

    grid = make_tile_grid(slide, config=config)
    if max_tiles is not None:
        grid = limit_grid(grid, int(max_tiles))
    n_tiles = len(grid.tile_ids)
    if n_tiles == 0:
        msg = (
            "no tissue tiles were found on the slide; lower the tissue threshold "
            "(--tissue-threshold, e.g. 0.02) or check that the image shows tissue"
        )
        raise BadInputError(msg)
    signature = build_signature(
        slide,
        resolved,
        config,
        max_tiles=max_tiles,
        dtype=dtype,
        device=device,
        precision=plan.precision,
    )
    writer = open_or_create_store(
        store,
        signature=signature,
        grid=grid,
        embed_dim=int(encoder.embed_dim),
        chunk_tiles=int(chunk_tiles or 8 * batch_size),
        dtype=dtype,
        precision=plan.precision,
        inference=session.info(),
    )
    todo = writer.todo_chunks()
    done_tiles = n_tiles - writer.tiles_in(todo)
    n_chunks = writer.n_chunks
    t0 = time.monotonic()
    new_tiles = 0
    chunks_done = n_chunks - len(todo)

    def event(message: str = "") -> Progress:
        elapsed = time.monotonic() - t0
        rate = new_tiles / elapsed if elapsed > 0 and new_tiles else 0.0
        left = n_tiles - done_tiles
        eta = left / rate if rate else None
        info = {
            "tiles_per_s": rate,
            "chunks_done": chunks_done,
            "n_chunks": n_chunks,
            "eta_s": eta,
            "new_tiles": new_tiles,
            "store": str(store),
        }
        text = message or (f"{rate:.1f} tiles/s" if rate else "")
        return Progress("embed", done_tiles, n_tiles, "tiles", message=text, info=info)

    resumed = (
        f"resuming: {done_tiles} of {n_tiles} tiles already embedded"
        if (done_tiles)
        else ""
    )
    yield event(resumed)
    if not todo:
        return store
    if scheduler is not None:
        from napari_seal.embedding.distributed import run_distributed

        steps = run_distributed(
            scheduler,
            slide,
            grid,
            encoder,
            writer,
            todo,
            batch_size=batch_size,
            device=device,
            timeout_s=scheduler_timeout_s,
            precision=plan.precision,
        )
    else:
        # compile (and oneDNN's first-call set-up) before the first real tiles
        what = "compiling the encoder" if plan.compile else "warming up the encoder"
        yield event(f"{what} ({plan.precision}, {plan.memory_format})")
        session.warm_up()
        if read_workers is None:
            import torch

            read_workers = auto_read_workers(
                session.device.type, torch.get_num_threads()
            )
        writer.record_inference({**session.info(), "read_workers": read_workers})
        if plan.compile:
            yield event(f"compiled the encoder in {session.compile_s:.1f} s")
        t0 = time.monotonic()
        steps = _run_local(
            slide,
            grid,
            writer,
            todo,
            encode=_encode_fn(
                encoder, batch_size=batch_size, device=device, session=session
            ),
            batch_size=batch_size,
            prefetch_batches=prefetch_batches,
            read_workers=read_workers,
        )
    try:
        for n_new, n_chunks_new in steps:
            new_tiles += n_new
            done_tiles += n_new
            chunks_done += n_chunks_new
            yield event()
    finally:
        steps.close()  # stop readers / cancel cluster tasks when cancelled
    return store


def embed(
    source: Any,
    encoder_or_run: Any,
    store: str | os.PathLike,
    *,
    progress: Callable[[Progress], None] | None = None,
    **kwargs: Any,
) -> Path:
    """Embed a slide into a zarr store (see :func:`iter_embed` for the arguments).

    Parameters
    ----------
    source, encoder_or_run, store
        As in :func:`iter_embed`.
    progress
        Called with each :class:`~napari_seal.progress.Progress` event.
    **kwargs
        Keyword arguments of :func:`iter_embed`.

    Returns
    -------
    Path
        The store path.
    """
    from napari_seal.progress import drain

    return drain(iter_embed(source, encoder_or_run, store, **kwargs), progress)
