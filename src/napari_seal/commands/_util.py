"""Helpers shared by the sub-commands (device choice, progress bar, JSON output)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "model_from_args",
    "print_progress_factory",
    "progress_bar",
    "resolve_device",
    "warnings_as_lines",
    "write_json",
]


def resolve_device(name: str) -> str:
    """Resolve ``auto`` to ``cuda``, ``mps`` or ``cpu`` (imports torch)."""
    import torch

    from napari_seal.errors import BadInputError

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        msg = ("--device cuda was asked for but no CUDA device is visible; "
               "use --device cpu")
        raise BadInputError(msg)
    return name


def print_progress_factory(*, stream=None) -> Callable[[Any], None]:
    """Return a callback that draws progress events as a one-line terminal bar."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}
    out = stream if stream is not None else sys.stderr

    def callback(event: Any) -> None:
        stage = getattr(event, "stage", type(event).__name__)
        total = getattr(event, "total", None)
        done = getattr(event, "done", None)
        if done is None:
            return
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(
                total=total, desc=stage, unit=getattr(event, "unit", "") or "it",
                file=out, dynamic_ncols=True, leave=True,
            )
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(max(0, done - bar.n))
        msg = getattr(event, "message", "")
        if msg:
            bar.set_postfix_str(msg, refresh=False)

    return callback


def write_json(obj: Any, path: str | Path | None) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (stdout when ``path`` is None)."""
    text = json.dumps(obj, indent=2, default=str)
    if path is None or str(path) == "-":
        sys.stdout.write(text + "\n")
        return
    from napari_seal.io.atomic import atomic_write_text

    atomic_write_text(Path(path), text + "\n")


def model_from_args(args: argparse.Namespace, device: str) -> Any:
    """Return the encoder (``--encoder``/``--weights``) or run path (``--run``)."""
    if args.run:
        return args.run
    from napari_seal.models.factory import create_encoder

    return create_encoder(
        args.encoder or "default", weights=args.weights, device=device
    )


def progress_bar() -> Any:
    """A terminal bar (tiles/s, ETA) that appears once the tile count is known.

    Set-up problems (store mismatch, no tissue...) then print only their one-line
    error, without an empty bar.
    """
    bar = print_progress_factory()

    def callback(event: Any) -> None:
        if getattr(event, "total", None):
            bar(event)

    return callback


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Print each ``UserWarning`` raised inside as one ``napari-seal: warning:`` line.

    Lines are printed only when the block succeeds: on bad input the single error
    line of ``cli.main`` is all that reaches stderr.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    seen: set[str] = set()
    for w in caught:
        text = " ".join(str(w.message).split())
        if issubclass(w.category, UserWarning) and text not in seen:
            seen.add(text)
            sys.stderr.write(f"napari-seal: warning: {text}\n")
