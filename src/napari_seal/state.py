"""The exploring state that napari-seal's docks share: one small model, many views.

Docks never call each other. Each writes what it produced (the slide it opened, the
store it filled, the run it trained, the gene the user typed) into the viewer's
:class:`ExploreState` and observes the fields it needs, as in napari-spatialdata's
model/view split. The state is plain Python (no napari, no Qt): the CLI and tests use
it as well, and a callback error never reaches the writer.

>>> state = ExploreState()
>>> seen = []
>>> state.observe(lambda name, value: seen.append((name, value)))
>>> state.set(gene="ERBB2", route="expression")
>>> state.gene, seen
('ERBB2', [('gene', 'ERBB2'), ('route', 'expression')])
>>> state.set(gene="ERBB2")  # unchanged values are not announced
>>> len(seen)
2
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

__all__ = ["FIELDS", "ExploreState", "state_for"]

log = logging.getLogger(__name__)

#: the shared fields and their meaning
FIELDS: dict[str, str] = {
    "slide":
        "path reopened to compute on the shown slide (sample folder or slide file)",
    "slide_name": "the slide layer's name",
    "mpp": "the slide's level-0 pixel size (um)",
    "model": "SEAL run folder (or saved head) used to predict; None: the shipped model",
    "store": "embedding store of the slide and model",
    "gene": "the gene (or query) being explored",
    "route": "what is painted: 'expression' (predicted), or a gene-query route",
    "workspace": "where outputs nobody named go (default: the per-user cache folder)",
}

Observer = Callable[[str, Any], None]


class ExploreState:
    """Named values with change notification (see the module docstring)."""

    def __init__(self, **values: Any) -> None:
        self._values: dict[str, Any] = dict.fromkeys(FIELDS)
        self._observers: list[tuple[Observer, frozenset[str] | None]] = []
        self.set(**values)

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)

    def as_dict(self) -> dict[str, Any]:
        """A copy of every field."""
        return dict(self._values)

    def observe(self, callback: Observer,
                fields: tuple[str, ...] | None = None) -> None:
        """Call ``callback(name, value)`` after each change of ``fields``
        (default: all)."""
        unknown = set(fields or ()) - set(FIELDS)
        if unknown:
            msg = (f"unknown state field(s) {sorted(unknown)}; "
                   f"fields: {', '.join(FIELDS)}")
            raise KeyError(msg)
        self._observers.append((callback, frozenset(fields) if fields else None))

    def unobserve(self, callback: Observer) -> None:
        """Stop calling ``callback`` (no error when it was not observing)."""
        self._observers = [(cb, f) for cb, f in self._observers if cb != callback]

    def set(self, **changes: Any) -> None:
        """Change fields and notify their observers, in the order given."""
        unknown = set(changes) - set(FIELDS)
        if unknown:
            msg = (f"unknown state field(s) {sorted(unknown)}; "
                   f"fields: {', '.join(FIELDS)}")
            raise KeyError(msg)
        changed = [(k, v) for k, v in changes.items() if self._values.get(k) != v]
        for key, value in changed:
            self._values[key] = value
        for key, value in changed:
            for callback, fields in list(self._observers):
                if fields is not None and key not in fields:
                    continue
                try:
                    callback(key, value)
                except Exception:  # an observer's bug must not break the writer
                    log.exception("state observer %r failed on %s", callback, key)


_STATES: WeakKeyDictionary[Any, ExploreState] = WeakKeyDictionary()


def state_for(owner: Any) -> ExploreState:
    """The one :class:`ExploreState` of ``owner`` (napari viewer), made on first use."""
    state = _STATES.get(owner)
    if state is None:
        state = _STATES[owner] = ExploreState()
    return state
