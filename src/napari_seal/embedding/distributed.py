"""Run embedding chunk tasks on a ``dask.distributed`` cluster.

Each task reads and encodes one chunk of tiles on a worker and returns its
embeddings; the client writes them into the store and sets the chunk's ``done``
flag, exactly as the local path does, so a cluster run and a local run give the same
store and either can resume the other.

The encoder is scattered once to every worker; the slide travels as a recipe
(path + pixel size, reopened once per worker process) when it has a file, otherwise
as the pickled in-memory slide.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Generator
from concurrent.futures import CancelledError
from typing import Any

import numpy as np

from napari_seal.errors import SchedulerError

__all__ = ["embed_chunk_task", "run_distributed"]

log = logging.getLogger(__name__)

# per worker process: slide recipe -> opened slide
_SLIDES: dict[tuple, Any] = {}


def _slide_recipe(slide: Any) -> Any:
    path = getattr(slide, "path", None)
    if path is not None and getattr(slide, "kind", "array") != "array":
        return ("open_slide", str(path), float(slide.mpp))
    return slide


def _open_recipe(recipe: Any) -> Any:
    if not isinstance(recipe, tuple):
        return recipe
    if recipe not in _SLIDES:
        from napari_seal.io.slide.core import open_slide

        _SLIDES[recipe] = open_slide(recipe[1], mpp=recipe[2])
    return _SLIDES[recipe]


def embed_chunk_task(
    recipe: Any,
    encoder: Any,
    grid: Any,
    start: int,
    stop: int,
    batch_size: int,
    device: str | None,
    precision: str = "auto",
) -> np.ndarray:
    """Read and encode tiles ``start:stop`` of ``grid`` (runs on a worker).

    ``precision`` is the one the client resolved (and put in the store signature),
    so every worker computes in it whatever its own CPU.

    Returns
    -------
    numpy.ndarray
        ``(stop - start, D)`` float32 embeddings.
    """
    from napari_seal.models.inference import encode_images
    from napari_seal.tiling.grid import read_tiles

    slide = _open_recipe(recipe)
    out = []
    for b0 in range(start, stop, batch_size):
        b1 = min(stop, b0 + batch_size)
        tiles = read_tiles(slide, grid, np.arange(b0, b1))
        out.append(
            encode_images(
                encoder,
                tiles,
                batch_size=batch_size,
                device=device,
                precision=precision,
            )
        )
    return np.concatenate(out, axis=0).astype(np.float32, copy=False)


def _connect(scheduler: Any, timeout_s: float) -> tuple[Any, bool]:
    """Return ``(client, owned)`` for an address or an existing ``Client``."""
    try:
        from distributed import Client
    except ImportError as err:
        msg = (
            "--scheduler needs the `distributed` package; install it with "
            "`pip install napari-seal[distributed]`"
        )
        raise SchedulerError(msg) from err
    if isinstance(scheduler, Client):
        return scheduler, False
    address = getattr(scheduler, "scheduler_address", scheduler)  # a LocalCluster
    try:
        client = Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        msg = (
            f"the dask scheduler at {address!r} did not answer within {timeout_s:g} s "
            f"({type(err).__name__}); check the address (tcp://HOST:8786) and that "
            "the scheduler is running, or drop --scheduler to embed locally"
        )
        raise SchedulerError(msg) from err
    return client, True


def run_distributed(
    scheduler: Any,
    slide: Any,
    grid: Any,
    encoder: Any,
    writer: Any,
    todo: list[int],
    *,
    batch_size: int,
    device: str | None,
    timeout_s: float,
    max_in_flight: int | None = None,
    precision: str = "auto",
) -> Generator[tuple[int, int], None, None]:
    """Embed the ``todo`` chunks on a cluster; yield ``(tiles, 1)`` per chunk written.

    At most ``max_in_flight`` chunk results (default: 2 per worker thread) are
    pending at once, so client memory stays bounded.

    Raises
    ------
    SchedulerError
        The scheduler does not answer, or the cluster is lost mid-run (finished
        chunks stay in the store; rerun to resume).
    """
    from distributed import as_completed

    client, owned = _connect(scheduler, timeout_s)
    futures: list[Any] = []
    token = uuid.uuid4().hex[:8]
    try:
        try:
            n_threads = sum(client.nthreads().values()) or 1
            recipe = _slide_recipe(slide)
            [enc_f] = client.scatter([encoder], broadcast=True, hash=False)
            [grid_f] = client.scatter([grid], broadcast=True, hash=False)
            recipe_f = recipe
            if not isinstance(recipe, tuple):
                [recipe_f] = client.scatter([recipe], broadcast=True, hash=False)
        except (OSError, TimeoutError) as err:
            msg = (
                f"lost the dask scheduler while sending the encoder ({err}); check the "
                "cluster and rerun"
            )
            raise SchedulerError(msg) from err
        limit = max_in_flight or max(2, 2 * n_threads)
        queue = deque(todo)
        chunk_of: dict[str, int] = {}

        def submit(chunk: int) -> Any:
            c0, c1 = writer.chunk_range(chunk)
            fut = client.submit(
                embed_chunk_task,
                recipe_f,
                enc_f,
                grid_f,
                c0,
                c1,
                batch_size,
                device,
                precision,
                key=f"napari-seal-embed-{token}-{chunk}",
                pure=False,
            )
            chunk_of[fut.key] = chunk
            futures.append(fut)
            return fut

        first = [submit(queue.popleft()) for _ in range(min(limit, len(queue)))]
        pool = as_completed(first, loop=client.loop)
        for fut in pool:
            try:
                emb = fut.result()
            except (OSError, TimeoutError, CancelledError) as err:
                done = writer.n_chunks - len(writer.todo_chunks())
                msg = (
                    f"lost the dask cluster mid-run ({type(err).__name__}: {err}); "
                    f"{done} of {writer.n_chunks} chunks are kept in {writer.path}; "
                    "rerun the same command to resume"
                )
                raise SchedulerError(msg) from err
            chunk = chunk_of.pop(fut.key)
            futures.remove(fut)
            fut.release()
            writer.write_chunk(chunk, emb)
            c0, c1 = writer.chunk_range(chunk)
            if queue:
                pool.add(submit(queue.popleft()))
            yield c1 - c0, 1
    finally:
        if futures:
            client.cancel(futures)
        if owned:
            client.close(timeout=timeout_s)
