"""The one place that resolves devices: CPU or CUDA, mixed precision, and DistributedDataParallel ranks.

``torchrun`` announces a distributed run through RANK / LOCAL_RANK / WORLD_SIZE; without them the run is
a single process. The cross-rank gathers the losses need live with them, in ``models.distributed``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DeviceSetup:
    device: torch.device
    amp: bool
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve(requested: str = "auto", amp: bool | None = None) -> DeviceSetup:
    """``auto`` takes CUDA when present (one device per local rank), else the CPU; AMP defaults to CUDA."""
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but no CUDA device is visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device(requested)
    return DeviceSetup(device, device.type == "cuda" if amp is None else amp, rank, local_rank, world_size)


def init_distributed(setup: DeviceSetup) -> None:
    """Join the process group torchrun prepared (NCCL on GPU, Gloo on CPU); a no-op for one process."""
    if setup.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if setup.device.type == "cuda" else "gloo")
