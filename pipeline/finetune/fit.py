"""Fitting a detector in each mode, on images already in memory (labelled sets are small).

- linear: logistic regression (scikit-learn, balanced classes) on the frozen encoder's unit-length
  features, copied into the ``Classifier`` head so the registered model is one torch module;
- full: starts from that linear probe (LP-FT: the head does not wreck the features in its first steps)
  and trains every weight. With fewer than ``gentle_below`` labelled images a pretrained encoder is
  handled gently: it learns at ``encoder_lr_factor`` of the head's rate and keeps its BatchNorm statistics
  (a batch of four labelled scans cannot estimate better ones). Otherwise, and always from scratch, the
  encoder trains as any supervised network does: at the head's rate, with BatchNorm on batch statistics,
  whose running averages are then estimated afresh over the training images with the final weights
  (without that, 32 labelled images left one scratch seed in three at chance). Gentle handling with
  every label capped a pretrained encoder below scratch (BUSI: 0.72 against 0.88 validation AUROC), and
  anything less than the full recipe would handicap the scratch baseline SSL is compared with;
- oneclass: the normal training embeddings become the ``NormalBank``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from models.batchnorm import estimate_batchnorm
from models.detectors import Classifier, NormalBank
from pipeline.config import FinetuneConfig
from pipeline.data.augment import RandViewd
from pipeline.inference import embed_all


def fit_linear(
    encoder: nn.Module,
    feature_dim: int,
    images: torch.Tensor,
    labels: np.ndarray,
    c: float,
    seed: int,
    device: torch.device,
) -> Classifier:
    features = embed_all(encoder, images, device)
    probe = LogisticRegression(C=c, class_weight="balanced", max_iter=5000, random_state=seed).fit(features, labels)
    model = Classifier(encoder, feature_dim)
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(probe.coef_, dtype=torch.float32))
        model.head.bias.copy_(torch.as_tensor(probe.intercept_, dtype=torch.float32))
    return model


def training_setup(
    model: Classifier, target: torch.Tensor, cfg: FinetuneConfig, gentle: bool, device: torch.device
) -> tuple[torch.optim.Optimizer, nn.Module]:
    """AdamW over the head at ``cfg.lr`` and the encoder at ``encoder_lr_factor`` of it when ``gentle``, and
    a cross-entropy that weighs the classes of ``target`` alike; ``model`` moved to ``device``."""
    model.to(device)
    optimiser = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": cfg.lr * (cfg.encoder_lr_factor if gentle else 1.0)},
            {"params": model.head.parameters(), "lr": cfg.lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    positives = float(target.sum())
    weight = torch.tensor((len(target) - positives) / positives, device=device)
    return optimiser, nn.BCEWithLogitsLoss(pos_weight=weight)


def fit_full(
    model: Classifier,
    images: torch.Tensor,
    labels: np.ndarray,
    cfg: FinetuneConfig,
    augment: RandViewd,
    seed: int,
    device: torch.device,
    pretrained: bool = True,
    progress: Callable[[float], None] = lambda loss: None,
) -> Classifier:
    """Fine-tune ``model`` (a fitted linear probe) end to end for ``cfg.epochs`` passes; ``pretrained``
    False: its encoder starts from random weights (see the module docstring)."""
    gentle = pretrained and len(images) < cfg.gentle_below
    generator = torch.Generator().manual_seed(seed)
    augment.set_random_state(seed)
    target = torch.as_tensor(labels, dtype=torch.float32)
    optimiser, loss_fn = training_setup(model, target, cfg, gentle, device)
    steps = cfg.epochs * max(1, -(-len(images) // cfg.batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    model.train(not gentle)  # eval mode keeps pretrained BatchNorm statistics; gradients reach every weight
    for _ in range(cfg.epochs):
        order = torch.randperm(len(images), generator=generator)
        for batch in order.split(cfg.batch_size):
            if len(batch) < 2 and not gentle:  # batch statistics of one image are undefined past the pooling
                continue
            loss = loss_fn(model(augment.view(images[batch].to(device))), target[batch].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            progress(loss.item())
    if gentle:
        return model.eval().cpu()
    # The running averages lag the last weights; estimated afresh they match them (models.batchnorm).
    return estimate_batchnorm(model, images, cfg.batch_size, device)


def fit_oneclass(
    encoder: nn.Module, images: torch.Tensor, labels: np.ndarray, cfg: FinetuneConfig, device: torch.device
) -> NormalBank:
    """Only the normal images count: an abnormal label among the drawn ones is ignored by design."""
    normals = images[torch.as_tensor(labels == 0)]
    bank = torch.as_tensor(embed_all(encoder, normals, device))
    return NormalBank(encoder.cpu(), bank, cfg.oneclass_k, cfg.oneclass_metric)
