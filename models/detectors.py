"""Anomaly detectors on a pretrained encoder: images in, one anomaly score per image out.

Two kinds, so one registered model type serves every fine-tuning mode:
- ``Classifier``: encoder + linear head, a logit per image (linear probe or full fine-tuning), trained with
  normal and abnormal labels;
- ``NormalBank``: no head; the score is how far an image's embedding lies from its ``k`` nearest normal
  training embeddings (cosine), for when only normal scans are labelled. Mahalanobis distance to the
  normal embeddings' Gaussian is the alternative (``metric="mahalanobis"``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Classifier(nn.Module):
    """``forward(images) -> logits (N,)``: higher means more likely abnormal."""

    def __init__(self, encoder: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(feature_dim, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The head sees unit-length features, as the linear probe that initialises it was fitted on.
        return self.head(F.normalize(self.encoder(images).float(), dim=1)).squeeze(1)


class NormalBank(nn.Module):
    """``forward(images) -> distance (N,)`` to the normal training embeddings held in ``bank``."""

    def __init__(self, encoder: nn.Module, bank: torch.Tensor, k: int = 5, metric: str = "knn") -> None:
        super().__init__()
        if metric not in ("knn", "mahalanobis"):
            raise ValueError(f"metric must be knn or mahalanobis, got {metric!r}")
        self.encoder, self.k, self.metric = encoder, min(k, len(bank)), metric
        bank = F.normalize(bank.float(), dim=1)
        self.register_buffer("bank", bank)
        mean = bank.mean(0)
        centred = bank - mean
        # Shrunk covariance: with a few dozen normals in hundreds of dimensions the sample one is singular.
        cov = centred.T @ centred / max(1, len(bank) - 1)
        shrink = 0.5
        cov = (1 - shrink) * cov + shrink * torch.eye(len(mean)) * cov.diagonal().mean().clamp_min(1e-6)
        self.register_buffer("mean", mean)
        self.register_buffer("precision", torch.linalg.inv(cov))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.encoder(images).float(), dim=1)
        if self.metric == "mahalanobis":
            d = z - self.mean
            return ((d @ self.precision) * d).sum(1)
        nearest = (z @ self.bank.T).topk(self.k, dim=1).values
        return 1 - nearest.mean(1)
