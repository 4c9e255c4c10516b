"""Helpers shared by the sub-commands (device choice, progress bar, JSON output)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["print_progress_factory", "resolve_device", "write_json"]


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
        msg = "--device cuda was asked for but no CUDA device is visible; use --device cpu"
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
    """Write ``obj`` as JSON to ``path`` atomically, or to stdout when ``path`` is None."""
    text = json.dumps(obj, indent=2, default=str)
    if path is None or str(path) == "-":
        sys.stdout.write(text + "\n")
        return
    from napari_seal.io.atomic import atomic_write_text

    atomic_write_text(Path(path), text + "\n")
