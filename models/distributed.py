"""Cross-rank helpers the losses need under DistributedDataParallel; each is the identity in one process.

Contrastive methods want every rank's embeddings as negatives, MoCo's queue every rank's keys, and DINO's
centre the mean teacher output over the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherWithGrad(torch.autograd.Function):
    """Every rank computes the same loss over the gathered rows, so the gradient a rank's own rows get is
    the sum of what each rank's copy of the loss sends them; DDP's averaging then leaves the global loss's
    gradient. Keeping only the local copy's share, as a plain gather does, trains at 1 / world size of it."""

    @staticmethod
    def forward(ctx: object, local: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(_world())]
        dist.all_gather(parts, local.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(_world())[dist.get_rank()]


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, in rank order (every rank the same number), differentiable for the global loss."""
    if _world() == 1:
        return local
    return _GatherWithGrad.apply(local)


def mean_across_ranks(local: torch.Tensor) -> torch.Tensor:
    """The mean of ``local`` over ranks (no gradient), for statistics such as DINO's centre."""
    if _world() == 1:
        return local
    total = local.detach().clone()
    dist.all_reduce(total)
    return total / _world()
