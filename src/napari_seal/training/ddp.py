"""Multi-process training helpers: rank discovery and a differentiable all-gather.

``torchrun --nproc-per-node N -m napari_seal.training SAMPLE... --out RUN`` starts N
processes; each calls :func:`init_distributed` (which reads torchrun's environment),
trains on its share of every global batch inside ``DistributedDataParallel``, and
scores its spots against the gathered embeddings of all ranks (CLIP negatives).

Gradient semantics: :func:`all_gather_with_grad` returns the concatenation of every
rank's tensor; its backward sums the incoming gradients over ranks and hands each rank
the slice of its own rows. Every rank computes the same global CLIP loss, so after
DDP averages the parameter gradients they equal the single-process gradients of the
whole batch (open_clip's ``gather_with_grad=True`` semantics).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_gather_with_grad",
    "barrier",
    "cleanup_distributed",
    "dist_info",
    "init_distributed",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes the run directory)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Return the current rank and world size (single process when not initialised)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
        )
    return DistInfo()


def init_distributed(*, device: str = "cpu") -> DistInfo:
    """Initialise ``torch.distributed`` from torchrun's environment when present.

    Uses NCCL for CUDA devices and gloo otherwise. Without ``WORLD_SIZE`` > 1 in the
    environment this is a no-op that returns a single-process :class:`DistInfo`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_initialized()):
        return dist_info()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    info = dist_info()
    log.info("distributed training: rank %d of %d (%s)", info.rank, world, backend)
    return info


def cleanup_distributed() -> None:
    """Destroy the process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size()
        ctx.rank = dist.get_rank()
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.n
        return grad[start : start + ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (``(B_local, ...)``, same size on all ranks) in rank order.

    Returns ``x`` unchanged in a single process. The backward pass sums gradients over
    ranks and returns this rank's rows, so gradients reach every rank's local shard.
    """
    if (
        not (dist.is_available() and dist.is_initialized())
        or dist.get_world_size() == 1
    ):
        return x
    return _AllGather.apply(x)
