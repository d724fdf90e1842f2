"""The pretraining loop: a batch of view pairs a step, mixed precision, and checkpoints to resume from.

Every epoch reseeds its randomness (batch order, views, torch) from the run's seed and the epoch number,
so a checkpoint needs only the weights, the optimiser, the scaler and the epoch: a resumed run continues
exactly where the uninterrupted one would be.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.device import DeviceSetup
from pipeline.pretrain.views import INDEX, VIEWS


def seed_epoch(seed: int, epoch: int, order: torch.Generator, *transforms: Randomizable) -> None:
    """Derive this epoch's random streams (torch, numpy, the batch order, each transform) from (seed, epoch)."""
    epoch_seed = (seed * 1000 + epoch) % 2**32
    torch.manual_seed(epoch_seed)
    np.random.seed(epoch_seed)
    order.manual_seed(epoch_seed)
    for i, transform in enumerate(transforms):
        transform.set_random_state(seed=(epoch_seed + i) % 2**32)


def train_epoch(
    model: nn.Module,
    loader: Any,
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    setup: DeviceSetup,
    before_step: Callable[[int], None] | None = None,
    after_step: Callable[[float], None] | None = None,
) -> list[float]:
    """One pass over ``loader`` (seeded first with ``seed_epoch``); returns the loss of every step.

    ``before_step(i)`` sets schedules (learning rate, momentum) for step ``i`` of the epoch;
    ``after_step(loss)`` reports progress. ``model`` may be wrapped in DistributedDataParallel.
    """
    core = model.module if isinstance(model, DistributedDataParallel) else model
    model.train()
    losses = []
    for i, batch in enumerate(loader):
        if before_step is not None:
            before_step(i)
        view_a, view_b = (batch[name].to(setup.device, non_blocking=True).float() for name in VIEWS)
        with torch.autocast(device_type=setup.device.type, enabled=setup.amp):
            loss = model(view_a, view_b, batch[INDEX].to(setup.device))
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        core.after_step()
        losses.append(loss.item())
        if after_step is not None:
            after_step(losses[-1])
    if not losses:  # ThreadDataLoader's thread prints a failed batch and ends the epoch instead of raising
        raise RuntimeError("the data loader yielded no batch; see the error printed above")
    return losses
