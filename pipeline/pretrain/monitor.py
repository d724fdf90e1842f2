"""The standard SSL monitor: how well frozen embeddings separate normal from abnormal by k nearest neighbours.

Run every few epochs on a small labelled validation set; it needs no training of its own, so it measures
the representation, not a classifier fitted on top.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn


@torch.no_grad()
def embed_all(
    model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 64
) -> np.ndarray:
    """L2-normalised embeddings of ``images`` (N, C, ...) from ``model.embed`` (an SSL method) or
    ``model`` itself (an encoder), in eval mode on ``device``. Encoders arrive on the CPU (loaded from the
    registry or built): the model goes to ``device`` for the pass and back to where it was after."""
    was_training, home = model.training, next(model.parameters()).device
    model.to(device).eval()
    features = getattr(model, "embed", model)
    parts = [features(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    model.to(home).train(was_training)
    return torch.nn.functional.normalize(torch.cat(parts), dim=1).numpy()


def knn_auroc(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """AUROC of a similarity-weighted k-NN vote (cosine, exp(sim / T) weights, as in InstDisc/DINO)."""
    if len(set(val_y.tolist())) < 2:
        raise ValueError("the validation set needs both normal and abnormal images")
    k = min(k, len(train_x))
    similarity = val_x @ train_x.T
    neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(similarity, neighbours, axis=1) / temperature)
    scores = (weights * train_y[neighbours]).sum(axis=1) / weights.sum(axis=1)
    return float(roc_auc_score(val_y, scores))
