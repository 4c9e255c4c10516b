"""Keep triton's bundled LLVM from binding to Mesa's (the llvmpipe segfault).

CUDA builds of torch install ``triton``. Its native library ``libtriton.so`` links LLVM
statically but exports ~24k ``llvm::`` symbols without ``-Bsymbolic``. Once napari's
canvas exists on Mesa's software (llvmpipe) or radeonsi OpenGL, Mesa has put its own
``libLLVM-*.so`` in the global symbol scope; when ``import triton`` then dlopens
``libtriton.so`` (torchvision -> ``torch._dynamo.utils`` imports it whenever it is
installed; timm and peft reach it through torchvision and transformers), ~12k of its
references bind to Mesa's LLVM and its static initialisers corrupt that LLVM's heap:
SIGSEGV inside ``dlopen``, and the viewer dies with the user's unsaved work. Importing
in another thread does not help (symbol binding is per process), and torch has no
switch that keeps triton unloaded.

The fix: just before the first ``import triton``, if a foreign ``libLLVM`` is mapped,
dlopen ``libtriton.so`` with ``RTLD_DEEPBIND`` so it resolves its own symbols first;
the later import reuses that handle. triton stays fully usable (``torch.compile``).
The guard is an entry on ``sys.meta_path`` that only looks at the name ``triton``; it
is installed by ``import napari_seal`` (so the Python API called from napari's console,
the reader and the demo are covered, not only the widgets) and again, idempotently,
when napari loads the widgets (:mod:`napari_seal._widgets`). It lives in the core
because the clash is not napari's: any process with Mesa's LLVM mapped has it.
Upstream: triton PR #9922 ("Minimize exported symbols"). See ``docs/napari.md``.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys

__all__ = ["foreign_llvm_loaded", "install_triton_guard", "preload_triton"]

log = logging.getLogger(__name__)


def _mapped(fragment: str) -> bool:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return any(fragment in line for line in maps)
    except OSError:
        return False


def foreign_llvm_loaded() -> bool:
    """True if a shared ``libLLVM`` (Mesa's llvmpipe or radeonsi) is in this process."""
    return _mapped("/libLLVM")


def preload_triton(*, force: bool = False) -> bool:
    """Load ``libtriton.so`` with ``RTLD_DEEPBIND`` if a foreign LLVM is mapped.

    Returns True when the library was loaded here. A no-op (False) off Linux/glibc,
    when triton is absent or already imported, or when no foreign LLVM is mapped.
    """
    if not sys.platform.startswith("linux") or "triton" in sys.modules:
        return False
    if not hasattr(os, "RTLD_DEEPBIND") or not (force or foreign_llvm_loaded()):
        return False
    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    from pathlib import Path  # not at module level: ``import napari_seal`` stays light

    lib = Path(next(iter(spec.submodule_search_locations))) / "_C" / "libtriton.so"
    # os.path.exists never raises; Path.exists re-raises e.g. EACCES (Python 3.11), and
    # this runs inside an import hook, which must not break ``import triton`` itself
    if not os.path.exists(lib):  # noqa: PTH110
        return False
    try:
        ctypes.CDLL(str(lib), mode=os.RTLD_NOW | os.RTLD_LOCAL | os.RTLD_DEEPBIND)
    except OSError as err:  # a broken triton install fails later, on its own import
        log.warning("could not preload %s: %s", lib, err)
        return False
    log.info("loaded %s with RTLD_DEEPBIND (a foreign libLLVM is mapped)", lib)
    return True


class _TritonGuard:
    """``sys.meta_path`` entry: runs :func:`preload_triton` before ``import triton``."""

    _busy = False

    def find_spec(self, name, path=None, target=None):  # noqa: ARG002 - finder protocol
        if name == "triton" and not self._busy:
            # probes like importlib.util.find_spec("triton") (plain `import torch` does
            # one) also land here: stay installed until libtriton is really loaded
            self._busy = True  # preload_triton itself calls find_spec("triton")
            try:
                preload_triton()
                if _mapped("/libtriton.so") and self in sys.meta_path:
                    sys.meta_path.remove(self)
            finally:
                self._busy = False
        return  # None: the normal finders import it


def install_triton_guard() -> None:
    """Install the guard once (cheap: no I/O until something imports triton)."""
    if not sys.platform.startswith("linux") or "triton" in sys.modules:
        return
    if not any(isinstance(f, _TritonGuard) for f in sys.meta_path):
        sys.meta_path.insert(0, _TritonGuard())
