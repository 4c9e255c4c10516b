"""The per-user workspace: where outputs go that nobody named (DESIGN 5).

Embedding stores made on the fly, slide caches, hash tables: anything a command or a
widget writes without being told where goes under :func:`workspace_root`, keyed by slide
identity and model, never beside the user's inputs and never inside the installed
package.

The root is ``$NAPARI_SEAL_CACHE`` when set, else the platform's per-user cache folder
for ``napari-seal`` (``platformdirs.user_cache_dir``; without platformdirs
``$XDG_CACHE_HOME/napari-seal`` or ``~/.cache/napari-seal``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["workspace_path", "workspace_root"]

APP = "napari-seal"


def workspace_root() -> Path:
    """The per-user workspace folder (not created here).

    Examples
    --------
    >>> workspace_root().is_absolute()
    True
    """
    env = os.environ.get("NAPARI_SEAL_CACHE")
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
        return base / APP
    return Path(user_cache_dir(APP, appauthor=False))


def workspace_path(
    kind: str,
    *,
    name: str,
    key: Any,
    suffix: str = "",
    root: str | os.PathLike | None = None,
) -> Path:
    """``<root>/<kind>/<name>-<hash of key><suffix>``: a workspace location.

    Parameters
    ----------
    kind
        The sub-folder (``"stores"``, ``"slides"``, ...).
    name
        A readable stem, e.g. the slide's file name (sanitised here).
    key
        Anything JSON-able that identifies the output: slide identity and model
        (for an embedding store, its signature). Equal keys give equal paths.
    suffix
        File or folder suffix (``".zarr"``).
    root
        The workspace (default :func:`workspace_root`).

    Examples
    --------
    >>> p = workspace_path("stores", name="C2", key={"slide": 1}, suffix=".zarr",
    ...                    root="/ws")
    >>> p.parent.as_posix(), p.name.startswith("C2-"), p.suffix
    ('/ws/stores', True, '.zarr')
    """
    digest = hashlib.sha256(
        json.dumps(key, sort_keys=True, default=str).encode("utf-8")
    ).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "slide"
    base = Path(root).expanduser() if root is not None else workspace_root()
    return base / kind / f"{stem[:80]}-{digest}{suffix}"
