"""How inference runs on this machine: precision, memory format, compilation.

:func:`plan_inference` turns a request (``precision="auto"|"fp32"|"bf16"|"fp16"``,
``memory_format="auto"|"contiguous"|"channels_last"``, ``compile``) into an
:class:`InferencePlan` for one encoder on one device (issue 14):

- memory format: ``channels_last`` for convolutional encoders (most of their
  parameters in ``Conv2d`` layers: the ``default`` EfficientNet-Lite0), ``contiguous``
  for transformers, whose only convolution is the patch embedding;
- precision, ``auto``: on CPU bf16 autocast only where the CPU executes bf16
  natively (AVX512-BF16 or AMX-BF16 in ``/proc/cpuinfo``; where the CPU flags cannot
  be read, a short measured matmul probe, cached per machine in
  ``$NAPARI_SEAL_CACHE/hardware.json``), fp32 elsewhere: emulated bf16 is 8-9x
  slower than fp32 (docs/training.md). On CUDA the model card's fp16/bf16, else bf16
  where the card supports it; other devices fp32. Encoders without floating-point
  compute (``color-stats``) always run fp32.

Torch is imported inside the functions, so the CLI can import this module cheaply.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from napari_seal.errors import BadInputError

__all__ = [
    "MEMORY_FORMATS",
    "PRECISIONS",
    "InferencePlan",
    "bf16_probe",
    "cpu_flags",
    "cpu_native_bf16",
    "is_conv_encoder",
    "plan_inference",
    "resolve_precision",
    "tune_cpu_allocator",
]

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MEMORY_FORMATS = ("auto", "contiguous", "channels_last")
#: CPU flags meaning oneDNN executes bf16 natively (not emulated through fp32)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_CARD = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


@dataclass(frozen=True)
class InferencePlan:
    """What :func:`napari_seal.models.inference.encode_images` does on a device.

    Attributes
    ----------
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    precision
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast dtype; fp32 = no autocast).
    memory_format
        ``"contiguous"`` or ``"channels_last"`` (module weights and input batches).
    compile
        Run through ``torch.compile`` (static batch shape; the last batch is padded).
    reason
        Why this precision was chosen (shown by ``embed`` and kept in the store).
    """

    device: str
    precision: str
    memory_format: str
    compile: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able copy."""
        return asdict(self)


def _cache_root() -> Path:
    env = os.environ.get("NAPARI_SEAL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "napari-seal"


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU feature flags of ``/proc/cpuinfo``, or ``None`` where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def _machine_key() -> str:
    import torch

    flags = cpu_flags() or frozenset()
    return "|".join(
        [
            platform.machine(),
            platform.processor() or "",
            str(len(flags)),
            str(hash(tuple(sorted(flags))) & 0xFFFFFFFF),
            torch.__version__,
        ]
    )


def _matmul_gflops(dtype: Any, *, n: int = 384, seconds: float = 0.15) -> float:
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n**3 / max(time.perf_counter() - t0, 1e-9) / 1e9)
    return best


def bf16_probe(*, cache: bool = True) -> dict[str, Any]:
    """Measure bf16 vs fp32 matmul speed once per machine (~0.5 s; cached).

    Returns ``{"fp32_gflops", "bf16_gflops", "native"}``; ``native`` is True when
    bf16 runs at least as fast as fp32 (emulated bf16 is several times slower).
    The result is kept in ``$NAPARI_SEAL_CACHE/hardware.json`` keyed by the CPU
    and the torch version.
    """
    import torch

    path = _cache_root() / "hardware.json"
    key = _machine_key()
    table: dict[str, Any] = {}
    if cache and path.is_file():
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        if isinstance(table.get(key), dict):
            return table[key]
    fp32 = _matmul_gflops(torch.float32)
    bf16 = _matmul_gflops(torch.bfloat16)
    result = {"fp32_gflops": fp32, "bf16_gflops": bf16, "native": bf16 >= fp32}
    if cache:
        table[key] = result
        try:
            from napari_seal.io.atomic import atomic_write_text

            atomic_write_text(path, json.dumps(table))
        except OSError as err:  # an unwritable cache only costs the probe again
            log.debug("cannot write %s: %s", path, err)
    return result


@functools.lru_cache(maxsize=1)
def cpu_native_bf16() -> bool:
    """True when this CPU executes bf16 natively (AVX512-BF16 or AMX-BF16).

    From the CPU flags where readable; elsewhere (macOS, Windows) from
    :func:`bf16_probe`. ``$NAPARI_SEAL_CPU_BF16=0|1`` overrides both.
    """
    env = os.environ.get("NAPARI_SEAL_CPU_BF16")
    if env in ("0", "1"):
        return env == "1"
    flags = cpu_flags()
    if flags is not None and platform.machine().lower() in ("x86_64", "amd64"):
        return any(f in flags for f in NATIVE_BF16_FLAGS)
    return bool(bf16_probe()["native"])


@functools.lru_cache(maxsize=1)
def tune_cpu_allocator() -> bool:
    """Keep freed activation memory in the heap instead of returning it (glibc).

    glibc serves allocations above its mmap threshold (at most 32 MB) with fresh
    ``mmap`` pages and unmaps them on free, so every batch of a CNN at batch 64
    (activations of 100+ MB) page-faults its memory in again: measured here, 2.2 M
    minor faults and ~20 % of the CPU time in the kernel for 384 tiles of the
    default encoder, 44 k faults and ~1 % after this call. Raising the mmap and trim
    thresholds keeps the pages mapped; the process keeps its peak heap instead of
    shrinking after each batch. Once per process; glibc only; opt out with
    ``NAPARI_SEAL_TUNE_MALLOC=0``. Returns whether it applied.
    """
    import ctypes
    import ctypes.util

    if os.environ.get("NAPARI_SEAL_TUNE_MALLOC") == "0" or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or no libc: nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    ok = mallopt(m_mmap_threshold, 1 << 30) == 1
    ok = mallopt(m_trim_threshold, 1 << 30) == 1 and ok
    log.debug("glibc mmap/trim thresholds raised: %s", ok)
    return ok


def is_conv_encoder(module: Any) -> bool:
    """True when most of ``module``'s parameters sit in 2-D convolutions."""
    from torch import nn

    conv = total = 0
    for sub in module.modules():
        own = sum(p.numel() for p in sub.parameters(recurse=False))
        total += own
        if isinstance(sub, nn.Conv2d):
            conv += own
    return total > 0 and conv / total > 0.5


def _has_float_compute(encoder: Any) -> bool:
    spec = getattr(encoder, "spec", None)
    return getattr(spec, "family", "") != "color-stats"


def _cuda_bf16(dev: Any) -> bool:
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported())
    except (AssertionError, RuntimeError):  # no driver / no device
        return False


def _auto_precision(encoder: Any, dev: Any) -> tuple[str, str]:
    card = _CARD.get(str(getattr(encoder, "dtype", "")).removeprefix("torch."), "fp32")
    if not _has_float_compute(encoder):
        return "fp32", "no floating-point model compute"
    if dev.type == "cuda":
        if card == "fp16":
            return "fp16", "model card precision"
        if _cuda_bf16(dev):
            return "bf16", "bf16 supported by the GPU"
        return ("fp16" if card == "bf16" else "fp32"), "GPU without bf16"
    if dev.type == "cpu":
        if cpu_native_bf16():
            return "bf16", "CPU executes bf16 natively (AVX512-BF16/AMX)"
        return "fp32", "CPU has no native bf16 (emulated bf16 is slower than fp32)"
    return "fp32", f"{dev.type} runs fp32"


def _check_explicit(precision: str, dev: Any) -> str:
    if precision == "fp16" and dev.type != "cuda":
        msg = (
            f"precision fp16 is only supported on CUDA, not on {dev.type}; "
            "use --precision bf16 or fp32 (or auto)"
        )
        raise BadInputError(msg)
    if precision == "bf16" and dev.type == "cuda" and not _cuda_bf16(dev):
        msg = "this GPU does not support bf16; use --precision fp16, fp32 or auto"
        raise BadInputError(msg)
    if precision == "bf16" and dev.type not in ("cpu", "cuda"):
        msg = f"precision bf16 is not supported on {dev.type}; use fp32 or auto"
        raise BadInputError(msg)
    if precision == "bf16" and dev.type == "cpu" and not cpu_native_bf16():
        log.warning("this CPU has no native bf16: bf16 runs emulated (slow)")
    return "requested"


def _as_device(encoder: Any, device: Any) -> Any:
    import torch

    if device is None:
        return encoder.device
    return device if isinstance(device, torch.device) else torch.device(device)


def resolve_precision(
    encoder: Any, device: Any = None, precision: str = "auto"
) -> tuple[str, str]:
    """Return ``(precision, reason)`` for ``encoder`` on ``device`` (module doc).

    Raises
    ------
    BadInputError
        For an unknown precision or one the device cannot run.
    """
    if precision not in PRECISIONS:
        msg = f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        raise BadInputError(msg)
    dev = _as_device(encoder, device)
    if precision == "auto":
        return _auto_precision(encoder, dev)
    return precision, _check_explicit(precision, dev)


def plan_inference(
    encoder: Any,
    *,
    device: Any = None,
    precision: str = "auto",
    memory_format: str = "auto",
    compile: bool = False,
) -> InferencePlan:
    """Choose precision and memory format for ``encoder`` on ``device``.

    Parameters
    ----------
    encoder
        An :class:`~napari_seal.models.factory.Encoder`.
    device
        Where the module runs (default: where it is).
    precision
        ``"auto"`` (per machine, see the module doc), ``"fp32"``, ``"bf16"`` or
        ``"fp16"`` (CUDA only).
    memory_format
        ``"auto"`` (channels_last for convolutional encoders), ``"contiguous"`` or
        ``"channels_last"``.
    compile
        Run the module through ``torch.compile``.

    Returns
    -------
    InferencePlan

    Raises
    ------
    BadInputError
        For an unknown value or a precision the device cannot run.
    """
    if memory_format not in MEMORY_FORMATS:
        msg = (
            f"memory format must be one of {', '.join(MEMORY_FORMATS)}, got "
            f"{memory_format!r}"
        )
        raise BadInputError(msg)
    dev = _as_device(encoder, device)
    precision, reason = resolve_precision(encoder, dev, precision)
    if memory_format == "auto":
        memory_format = (
            "channels_last" if is_conv_encoder(encoder.module) else "contiguous"
        )
    return InferencePlan(
        device=str(dev),
        precision=precision,
        memory_format=memory_format,
        compile=bool(compile),
        reason=reason,
    )
