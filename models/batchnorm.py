"""BatchNorm running statistics estimated once over a set of images, with the final weights.

Two stages need it. Fine-tuning: a network trained on batch statistics ends with running averages that
lag its last weights (an exponential average over a few dozen steps of a network still moving); with a
few labelled images that lag alone can sink a scratch model to chance. Re-estimating them with the final
weights ("precise BN", Wu & Johnson 2021) removes it. Adaptation: AdaBN (Li et al. 2016) is the same
estimate on another site's scans.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

M = TypeVar("M", bound=nn.Module)


def batchnorms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def estimate_batchnorm(model: M, images: torch.Tensor, batch_size: int, device: torch.device) -> M:
    """``model`` itself (in eval mode, on the CPU), its BatchNorm running statistics re-estimated over
    ``images``; nothing learned changes. In place: a caller that must keep the original copies it first.

    The estimate is PyTorch's cumulative average (momentum None): each batch's mean and variance count
    equally, as in precise BN, so the variance leaves out the spread between batch means, which is small
    next to it at these batch sizes.
    """
    if len(images) < 2:
        raise ValueError(f"BatchNorm statistics need at least 2 images, got {len(images)}")
    model = model.to(device).eval()
    norms = batchnorms(model)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch, not an exponential one
        m.train()
    for start in range(0, len(images) - 1, batch_size):  # a last batch of one has no variance
        model(images[start : start + batch_size].to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return model.eval().cpu()
