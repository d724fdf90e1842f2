"""Cross-rank helpers the losses need under DistributedDataParallel; each is the identity in one process.

Contrastive methods want every rank's embeddings as negatives, MoCo's queue every rank's keys, and DINO's
centre the mean teacher output over the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, in rank order; gradients flow back into this rank's own rows only."""
    if _world() == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(_world())]
    dist.all_gather(parts, local.detach().contiguous())
    parts[dist.get_rank()] = local
    return torch.cat(parts)


def mean_across_ranks(local: torch.Tensor) -> torch.Tensor:
    """The mean of ``local`` over ranks (no gradient), for statistics such as DINO's centre."""
    if _world() == 1:
        return local
    total = local.detach().clone()
    dist.all_reduce(total)
    return total / _world()
