"""Semi-supervised fine-tuning: the few labels, and the archive's unlabelled scans while the detector learns.

Two families, ``finetune.semi.method``:

- ``fixmatch`` (Sohn et al. 2020), for one abnormality logit. Each step takes a batch of labelled images (a weak
view each, the usual weighted cross-entropy) and ``ratio`` times as many unlabelled ones: the detector,
without gradient, scores a weak view of each; where it is sure (probability above ``threshold`` or below
``1 - threshold``) that call becomes the image's label for a strong view, whose cross-entropy weighs
``weight``. Confident calls spread along the unlabelled data the encoder already organised, which is where
few labels gain most.
- ``meanteacher`` (Tarvainen & Valpola 2017): a teacher whose weights are an exponential average (``ema``) of
  the detector's scores a weak view of each unlabelled image, and the detector's probability on a strong
  view is pulled towards it (squared error, every image, its weight ramped up over the first third of
  training). The averaged teacher is the model kept.

Both start from the linear probe, as ``full`` does, and the encoder's BatchNorm learns on the large mixed
batches; its statistics are estimated afresh over every image at the end. The state after each epoch is
checkpointed, so a killed run resumes the repeat it was in (and reloads the repeats it had finished).

The unlabelled pool is every usable item of the manifest but the validation part (what the detector is
judged on during fine-tuning) and the scans ``finetune.exclude`` names (what evaluate and promote judge it on).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.nn import functional as F

from models.batchnorm import estimate_batchnorm
from models.detectors import Classifier
from pipeline.checkpoint import read_state, restore_state, save_state
from pipeline.config import Config, FinetuneConfig
from pipeline.data.augment import RandViewd
from pipeline.data.budget import by_content
from pipeline.data.items import Item, items, scans
from pipeline.data.manifest import read_manifest
from pipeline.data.screen import screen_and_report
from pipeline.finetune.fit import training_setup


def unlabelled_items(
    manifest: Path, config: Config, spatial_dims: int, validation: list[Item], excluded: set[str], console: Console
) -> list[Item]:
    """The pool (see the module docstring): at most ``semi.max_unlabelled`` scans, drawn by ``seed`` in the
    order of their content, so the pool does not depend on the pseudonym key. ``excluded``: the scans
    ``finetune.exclude`` names (``excluded_scans``), matched once by the caller."""
    cfg = config.finetune
    held = scans(validation) | excluded
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


def mean_teacher_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(loss, share of images the teacher is sure of, for the log): the squared gap between the student's
    probability on a strong view and the teacher's on the weak view; every image counts."""
    p = torch.sigmoid(teacher_logits.detach())
    loss = F.mse_loss(torch.sigmoid(student_logits), p)
    return loss, float(((p >= 0.95) | (p <= 0.05)).float().mean())


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """The teacher's weights become an exponential average of the student's; its BatchNorm statistics follow
    the student's as they are."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.lerp_(s, 1 - decay)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)


def rampup(progress: float, length: float = 0.3) -> float:
    """Tarvainen & Valpola's sigmoid ramp of the consistency weight over the first ``length`` of training:
    early targets come from a teacher that has not yet learnt the labels."""
    t = min(progress / length, 1.0)
    return float(np.exp(-5 * (1 - t) ** 2))


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
    checkpoint: Path | None = None,
    fingerprint: str = "",
) -> tuple[Classifier, float]:
    """(the fitted model, share of unlabelled images confident over the last epoch). An epoch is one pass
    over the unlabelled pool, the labelled images cycling beside it. With ``checkpoint``, the state after
    each epoch is written there and a run with the same ``fingerprint`` resumes from it."""
    semi = cfg.semi
    weak, strong = views
    target = torch.as_tensor(labels, dtype=torch.float32)
    gentle = pretrained and len(images) < cfg.gentle_below
    optimiser, supervised = training_setup(model, target, cfg, gentle, device)
    teacher = copy.deepcopy(model).requires_grad_(False) if semi.method == "meanteacher" else None
    batch, pooled = min(cfg.batch_size, len(images)), cfg.batch_size * semi.ratio
    per_epoch = max(1, -(-len(unlabelled) // pooled))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, cfg.epochs * per_epoch)
    parts = {"model": model, "teacher": teacher, "optimiser": optimiser, "schedule": schedule}
    state = read_state(checkpoint) if checkpoint is not None and checkpoint.is_file() else {}
    if state.get("fingerprint") != fingerprint:  # another fit's: start afresh
        state = {}
    restore_state(state, parts)
    start, used = int(state.get("epoch", 0)), float(state.get("used", 0.0))
    for epoch in range(start, cfg.epochs):
        # Each epoch's random streams start from (seed, epoch): a resumed epoch draws what it would have.
        generator = torch.Generator().manual_seed(seed * 1009 + epoch)
        weak.set_random_state(seed * 1009 + epoch)
        strong.set_random_state(seed * 1013 + epoch + 1)
        shares = []
        for step, pool in enumerate(torch.randperm(len(unlabelled), generator=generator).split(pooled)):
            labelled = torch.randperm(len(images), generator=generator)[:batch]
            x, u = images[labelled].to(device), unlabelled[pool].to(device)
            model.train()
            logits = model(torch.cat([weak.view(x), strong.view(u)] + ([] if teacher else [weak.view(u)])))
            head, strong_u = logits[: len(x)], logits[len(x) : len(x) + len(u)]
            if teacher is None:
                consistency, share = fixmatch_loss(logits[len(x) + len(u) :], strong_u, semi.threshold)
                weight = semi.weight
            else:
                with torch.no_grad():
                    teacher_u = teacher.eval()(weak.view(u))
                consistency, share = mean_teacher_loss(teacher_u, strong_u)
                weight = semi.weight * rampup((epoch * per_epoch + step) / (cfg.epochs * per_epoch))
            loss = supervised(head, target[labelled].to(device)) + weight * consistency
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            if teacher is not None:
                ema_update(teacher, model, semi.ema)
            shares.append(share)
        used = float(np.mean(shares))
        if checkpoint is not None:
            save_state(checkpoint, parts, fingerprint=fingerprint, epoch=epoch + 1, used=used)
    final = teacher if teacher is not None else model  # the mean teacher's average is its better model
    # The running averages lag the last weights; estimated afresh over every image they match them.
    return estimate_batchnorm(final, torch.cat([images, unlabelled]), cfg.batch_size, device), used
