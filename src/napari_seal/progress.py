"""Typed progress events yielded by long-running generators (``iter_*``).

Long work in napari-seal is a generator that yields events and returns its result
(``StopIteration.value``). Widgets run it in napari's ``thread_worker``; the CLI
drains it with a terminal progress bar; :func:`drain` runs it from Python.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

__all__ = ["Progress", "drain"]

R = TypeVar("R")


@dataclass
class Progress:
    """A generic progress event.

    Parameters
    ----------
    stage
        Short name of what is running (``"embed"``, ``"train"``...).
    done
        Units finished so far.
    total
        Units in all (``None`` when unknown).
    unit
        What a unit is (``"tiles"``, ``"steps"``).
    message
        Optional human-readable detail.
    info
        Extra machine-readable fields (loss terms, rates...).
    """

    stage: str
    done: int = 0
    total: int | None = None
    unit: str = ""
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    time_s: float = field(default_factory=time.monotonic)

    @property
    def fraction(self) -> float | None:
        """Fraction done in ``[0, 1]``, or ``None`` when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-able dict of the event."""
        d = asdict(self)
        d["type"] = type(self).__name__
        return d


def drain(
    gen: Generator[Any, None, R],
    progress: Callable[[Any], None] | None = None,
) -> R:
    """Run a generator to completion and return its result.

    Parameters
    ----------
    gen
        A generator of progress events, as returned by any ``iter_*`` function.
    progress
        Called with each event when given.

    Returns
    -------
    The generator's return value.
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(event)
