"""MoCo v2: a momentum key encoder and a queue of past keys as negatives.

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020; Chen et al.,
"Improved Baselines with Momentum Contrastive Learning" (v2: MLP head, stronger augmentation), 2020.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.distributed import gather_with_grad
from models.heads import projection_mlp
from models.momentum import MomentumPair


def info_nce(
    query: torch.Tensor,
    key: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE with one positive (``key``) per query and a shared bank of ``negatives``; inputs L2-normalised.
    ``exclude`` (queries x negatives, True: not a negative for that query) drops entries from the softmax."""
    positive = (query * key).sum(dim=1, keepdim=True)
    negative = query @ negatives.T
    if exclude is not None:
        negative = negative.masked_fill(exclude, float("-inf"))
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(query), dtype=torch.long, device=query.device))


class MoCo(MomentumPair):
    """``forward(view_a, view_b, index)`` returns the loss and pushes the batch's keys into the queue.

    The queue remembers whose key each entry is (``index``: the image's position in the training set), and
    a query never counts its own image's older keys as negatives: on a hospital-sized set the queue spans
    one epoch or more (512 keys against 437 BUSI training images), so without that nearly every query
    would be pushed away from another view of itself.
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        proj_hidden: int = 512,
        proj_dim: int = 128,
        queue_size: int = 4096,
        temperature: float = 0.2,
        momentum: float = 0.99,
    ) -> None:
        super().__init__(encoder, projection_mlp(feature_dim, proj_hidden, proj_dim), momentum)
        self.temperature = temperature
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_index", torch.full((queue_size,), -1, dtype=torch.long))  # -1: nobody's
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``index``: each image's position in the training set; None (no image known) masks nothing."""
        query = F.normalize(self.online(view_a), dim=1)
        with torch.no_grad():
            key = F.normalize(self.target(view_b), dim=1)
        if index is None:
            index = torch.full((len(view_a),), -1, dtype=torch.long, device=view_a.device)
        own = (self.queue_index[None] == index[:, None]) & (index[:, None] >= 0)
        loss = info_nce(query, key, self.queue.clone().detach(), self.temperature, own)
        self._enqueue(gather_with_grad(key), gather_with_grad(index))  # all ranks hold the same queue
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor, index: torch.Tensor) -> None:
        n, size = len(keys), len(self.queue)
        start = int(self.queue_ptr)
        slots = (torch.arange(n, device=keys.device) + start) % size
        self.queue[slots] = keys.to(self.queue.dtype)  # keys are half precision under autocast
        self.queue_index[slots] = index
        self.queue_ptr.fill_((start + n) % size)
