"""Encoders for self-supervised pretraining, built from MONAI's ResNet for 2D and 3D alike.

Sized by plain arguments so a config (or a test) can ask for a tiny network; ``spatial_dims`` picks 2D or
3D layers inside MONAI rather than through two copies of the code here.
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets import ResNet
from torch import nn


def build_encoder(
    spatial_dims: int = 2,
    in_channels: int = 1,
    widths: Sequence[int] = (64, 128, 256, 512),
    layers: Sequence[int] = (2, 2, 2, 2),
    block: str = "basic",
) -> tuple[nn.Module, int]:
    """A ResNet trunk without its classifier; returns (module, feature size).

    ``widths=(64, 128, 256, 512), layers=(2, 2, 2, 2)`` is ResNet-18; tests use e.g. ``(8, 16, 32, 64)``.
    The stem keeps stride 1 so small inputs (28x28, 64x64) still leave a spatial map for the last stage.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    net = ResNet(
        block=block,
        layers=list(layers),
        block_inplanes=list(widths),
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_size=3,
        conv1_t_stride=1,
        feed_forward=False,
    )
    expansion = 4 if block == "bottleneck" else 1
    return net, int(widths[-1]) * expansion
