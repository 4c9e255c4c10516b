"""Docks and the viewer's :class:`~napari_seal.state.ExploreState`.

:func:`publish` writes what a dock produced; :func:`observe_state` lets a dock follow
fields until it is destroyed (a closed dock is never called again).
"""

from collections.abc import Callable
from typing import Any

from napari_seal.state import ExploreState, state_for

__all__ = ["observe_state", "publish", "viewer_state"]


def viewer_state(viewer: Any) -> ExploreState:
    """The viewer's shared state."""
    return state_for(viewer)


def publish(viewer: Any, **changes: Any) -> None:
    """Write ``changes`` into the viewer's state (observers run at once, GUI thread)."""
    state_for(viewer).set(**changes)


def observe_state(widget: Any, viewer: Any, handlers: dict[str, Callable[[Any], None]]
                  ) -> None:
    """Call ``handlers[field](value)`` now (fields already set) and on each change,
    while ``widget`` lives."""
    state = state_for(viewer)
    for name, handler in handlers.items():
        if getattr(state, name) is not None:
            handler(getattr(state, name))

    def on_change(name: str, value: Any) -> None:
        handlers[name](value)

    state.observe(on_change, tuple(handlers))
    widget.destroyed.connect(lambda *_: state.unobserve(on_change))
