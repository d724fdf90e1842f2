"""The pretraining loop: two random views a step, AMP on GPU, and checkpoints a killed run resumes from.

Every epoch reseeds its randomness (batch order, views, torch) from the run's seed and the epoch number,
so a checkpoint needs only the weights, the optimiser, the scaler and the epoch: a resumed run continues
exactly where the uninterrupted one would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from torch import nn

from pipeline.atomic import atomic_path
from pipeline.device import DeviceSetup
from pipeline.pretrain.views import KEY


def _two_views(images: torch.Tensor, view: Compose) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.stack([torch.as_tensor(view({KEY: x})[KEY]) for x in images])
    b = torch.stack([torch.as_tensor(view({KEY: x})[KEY]) for x in images])
    return a.float(), b.float()


def seed_epoch(seed: int, epoch: int, view: Compose, order: torch.Generator) -> None:
    """Derive this epoch's random streams (torch, numpy, the views, the batch order) from (seed, epoch)."""
    epoch_seed = (seed * 1000 + epoch) % 2**32
    torch.manual_seed(epoch_seed)
    np.random.seed(epoch_seed)
    view.set_random_state(seed=epoch_seed)
    order.manual_seed(epoch_seed)


def train_epoch(
    model: nn.Module,
    loader: Any,
    view: Compose,
    optimiser: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    setup: DeviceSetup,
) -> list[float]:
    """One pass over ``loader`` (seeded first with ``seed_epoch``); returns the loss of every step."""
    model.train()
    losses = []
    for batch in loader:
        images = batch[KEY].to(setup.device, non_blocking=True)
        view_a, view_b = _two_views(images, view)
        with torch.autocast(device_type=setup.device.type, enabled=setup.amp):
            loss = model(view_a, view_b)
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()
        model.after_step()
        losses.append(loss.item())
    return losses


def save_checkpoint(
    path: Path, epoch: int, model: nn.Module, optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> None:
    """Write the training state atomically: a kill mid-write leaves the previous checkpoint intact."""
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "scaler": scaler.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(
    path: Path, model: nn.Module, optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> int:
    """Restore a checkpoint in place; returns the number of epochs it had finished."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    scaler.load_state_dict(state["scaler"])
    return int(state["epoch"])
