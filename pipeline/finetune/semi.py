"""Semi-supervised fine-tuning: the few labels, and the archive's unlabelled scans while the detector learns.

FixMatch (Sohn et al. 2020) for one abnormality logit. Each step takes a batch of labelled images (a weak
view each, the usual weighted cross-entropy) and ``ratio`` times as many unlabelled ones: the detector,
without gradient, scores a weak view of each; where it is sure (probability above ``threshold`` or below
``1 - threshold``) that call becomes the image's label for a strong view, whose cross-entropy weighs
``weight``. Confident calls spread along the unlabelled data the encoder already organised, which is where
few labels gain most. It starts from the linear probe, as ``full`` does, and the encoder's BatchNorm learns on
the large mixed batches; its statistics are estimated afresh over every image at the end.

The unlabelled pool is every usable item of the manifest but the validation part (what the detector is
judged on during fine-tuning) and the scans ``finetune.exclude`` names (what evaluate and promote judge it on).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch.nn import functional as F

from models.batchnorm import estimate_batchnorm
from models.detectors import Classifier
from pipeline.config import Config, FinetuneConfig
from pipeline.data.augment import RandViewd
from pipeline.data.budget import by_content
from pipeline.data.items import Item, items, scans
from pipeline.data.labelled import excluded_scans
from pipeline.data.manifest import read_manifest
from pipeline.data.screen import screen_and_report
from pipeline.finetune.fit import training_setup


def unlabelled_items(
    manifest: Path, config: Config, spatial_dims: int, validation: list[Item], console: Console
) -> list[Item]:
    """The pool (see the module docstring): at most ``semi.max_unlabelled`` scans, drawn by ``seed`` in the
    order of their content, so the pool does not depend on the pseudonym key."""
    cfg = config.finetune
    held = scans(validation) | excluded_scans(manifest, cfg.exclude, config.ingest.secret(), console)
    rows = read_manifest(manifest)
    rows = rows[~rows.series_key.isin(held)]
    found = items(rows, manifest.parent, spatial_dims, config.pretrain.slices_per_volume)
    found, _ = screen_and_report(found, manifest.parent, console, "finetune (unlabelled)")
    pool = by_content(found)
    if len(pool) > cfg.semi.max_unlabelled:
        rng = np.random.default_rng(cfg.seed)
        pool = rng.choice(pool, size=cfg.semi.max_unlabelled, replace=False).tolist()
    kept = set(pool)
    return [it for it in found if it["scan"] in kept]


def fixmatch_loss(
    weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, float]:
    """(loss, share of images used): cross-entropy of the strong views against the weak views' confident
    calls; images the detector is unsure of count zero, and no gradient flows through the calls."""
    p = torch.sigmoid(weak_logits.detach())
    confident = ((p >= threshold) | (p <= 1 - threshold)).float()
    target = (p >= 0.5).float()
    loss = (F.binary_cross_entropy_with_logits(strong_logits, target, reduction="none") * confident).mean()
    return loss, float(confident.mean())


def fit_semi(
    model: Classifier,
    images: torch.Tensor,
    labels: np.ndarray,
    unlabelled: torch.Tensor,
    cfg: FinetuneConfig,
    views: tuple[RandViewd, RandViewd],
    seed: int,
    device: torch.device,
    pretrained: bool = True,
) -> tuple[Classifier, float]:
    """(the fitted model, share of unlabelled images confident over the last epoch). An epoch is one pass
    over the unlabelled pool, the labelled images cycling beside it."""
    weak, strong = views
    weak.set_random_state(seed)
    strong.set_random_state(seed + 1)
    generator = torch.Generator().manual_seed(seed)
    target = torch.as_tensor(labels, dtype=torch.float32)
    gentle = pretrained and len(images) < cfg.gentle_below
    optimiser, supervised = training_setup(model, target, cfg, gentle, device)
    batch, pooled = min(cfg.batch_size, len(images)), cfg.batch_size * cfg.semi.ratio
    per_epoch = max(1, -(-len(unlabelled) // pooled))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, cfg.epochs * per_epoch)
    used = 0.0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(unlabelled), generator=generator).split(pooled)
        shares = []
        for pool in order:
            labelled = torch.randperm(len(images), generator=generator)[:batch]
            x = images[labelled].to(device)
            u = unlabelled[pool].to(device)
            model.train()
            logits = model(torch.cat([weak.view(x), weak.view(u), strong.view(u)]))
            head, weak_u, strong_u = logits[: len(x)], logits[len(x) : len(x) + len(u)], logits[len(x) + len(u) :]
            consistency, share = fixmatch_loss(weak_u, strong_u, cfg.semi.threshold)
            loss = supervised(head, target[labelled].to(device)) + cfg.semi.weight * consistency
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            shares.append(share)
        used = float(np.mean(shares))
    # The running averages lag the last weights; estimated afresh over every image they match them.
    return estimate_batchnorm(model, torch.cat([images, unlabelled]), cfg.batch_size, device), used
