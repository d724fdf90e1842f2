"""SimCLR: two augmented views of each image, pulled together against every other image in the batch.

The loss is MONAI's ``ContrastiveLoss`` (NT-Xent). Chen et al., "A Simple Framework for Contrastive
Learning of Visual Representations", ICML 2020.
"""

from __future__ import annotations

import torch
from monai.losses import ContrastiveLoss
from torch import nn

from models.distributed import gather_with_grad
from models.heads import projection_mlp


class SimCLR(nn.Module):
    """Encoder + projection head; ``forward(view_a, view_b)`` returns the NT-Xent loss of the batch."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        proj_hidden: int = 512,
        proj_dim: int = 128,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projection_mlp(feature_dim, proj_hidden, proj_dim)
        self.loss = ContrastiveLoss(temperature=temperature)

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``index`` unused: a batch holds each image once, so no negative is the query's own image."""
        z_a = gather_with_grad(self.projector(self.encoder(view_a)))  # other ranks' images are negatives too
        z_b = gather_with_grad(self.projector(self.encoder(view_b)))
        # The loss in float32 even under autocast: MONAI's NT-Xent builds the similarity matrix and its
        # exponentials from plain ops that stay in half precision, where a positive pair's logit is only
        # resolved to ~0.02 at temperature 0.2 (MoCo's cross-entropy is autocast to float32 by torch).
        with torch.autocast(z_a.device.type, enabled=False):
            return self.loss(z_a.float(), z_b.float())

    def set_progress(self, fraction: float) -> None:
        """No schedule of its own (the momentum methods anneal theirs here)."""

    def after_step(self) -> None:
        """Nothing to update outside the optimiser (the momentum methods move their target here)."""

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Features for downstream use: the encoder's output, before the projection head."""
        return self.encoder(images)
