"""Heads that sit on an encoder's features during pretraining and are dropped afterwards."""

from __future__ import annotations

from torch import nn


def projection_mlp(in_dim: int, hidden_dim: int = 512, out_dim: int = 128) -> nn.Sequential:
    """The two-layer MLP of SimCLR/MoCo v2: the loss works on its output, downstream tasks on its input."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(inplace=True),
        nn.Linear(hidden_dim, out_dim),
    )
