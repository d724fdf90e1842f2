"""The momentum machinery shared by MoCo and DINO: an online network and its slowly moving copy.

The target (key encoder in MoCo, teacher in DINO) is never trained by gradients; after each optimiser step
it moves towards the online network by an exponential moving average of the weights, whose momentum rises
from its base value to 1 along a half cosine over training (BYOL, DINO).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class MomentumPair(nn.Module):
    """``online`` = encoder followed by a head; ``target`` = its EMA copy, frozen for the optimiser."""

    def __init__(self, encoder: nn.Module, head: nn.Module, momentum: float) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.online = nn.Sequential(encoder, head)
        self.target = copy.deepcopy(self.online)
        self.target.requires_grad_(False)
        self.base_momentum = self.momentum = momentum

    def set_progress(self, fraction: float) -> None:
        """``fraction`` of training done, in [0, 1]: anneal the momentum towards 1."""
        self.momentum = 1.0 - (1.0 - self.base_momentum) * (math.cos(math.pi * fraction) + 1.0) / 2.0

    @property
    def encoder(self) -> nn.Module:
        return self.online[0]

    @torch.no_grad()
    def sync_target(self) -> None:
        """Make the target an exact copy of the online network again (after loading encoder weights)."""
        self.target.load_state_dict(self.online.state_dict())

    @torch.no_grad()
    def after_step(self) -> None:
        """Move the target towards the online weights; copy running statistics (BatchNorm) as they are."""
        for t, o in zip(self.target.parameters(), self.online.parameters(), strict=True):
            t.mul_(self.momentum).add_(o.detach(), alpha=1.0 - self.momentum)
        for t, o in zip(self.target.buffers(), self.online.buffers(), strict=True):
            t.copy_(o)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Features for downstream use: the online encoder's output, before any head."""
        return self.encoder(images)
