"""SimCLR on real images: MONAI encoder, MONAI NT-Xent, loss falls in a few steps of a tiny network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SAMPLE
from monai.losses import ContrastiveLoss
from monai.transforms import Compose, RandFlip, RandGaussianNoise, RandSpatialCrop
from PIL import Image

from models import METHODS
from models.encoders import build_encoder

TINY = {"widths": (8, 16, 32, 64), "layers": (1, 1, 1, 1)}


@pytest.mark.parametrize(("dims", "shape"), [(2, (3, 1, 64, 64)), (3, (2, 1, 32, 32, 32))])
def test_encoder_features(dims, shape):
    encoder, dim = build_encoder(spatial_dims=dims, **TINY)
    assert encoder(torch.zeros(shape)).shape == (shape[0], dim)


def test_encoder_rejects_other_dims():
    with pytest.raises(ValueError, match="spatial_dims"):
        build_encoder(spatial_dims=4)


def test_nt_xent_prefers_matching_views():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(16, 32, generator=gen)
    loss = ContrastiveLoss(temperature=0.1)
    matched = loss(z, z + 0.01 * torch.randn(16, 32, generator=gen))
    unrelated = loss(z, torch.randn(16, 32, generator=gen))
    assert matched < unrelated


def _cxr_batch() -> torch.Tensor:
    paths = sorted((SAMPLE / "cxr_nih1000").rglob("*.png"))
    images = [np.asarray(Image.open(p).convert("L"), dtype=np.float32) / 255.0 for p in paths]
    return torch.from_numpy(np.stack(images)[:, None])


def test_simclr_loss_falls_on_real_chest_xrays():
    torch.manual_seed(0)
    images = _cxr_batch()
    views = Compose(
        [
            RandSpatialCrop((48, 48), random_size=False),
            RandFlip(prob=0.5, spatial_axis=1),
            RandGaussianNoise(prob=0.5, std=0.05),
        ]
    )
    views.set_random_state(seed=0)
    encoder, dim = build_encoder(spatial_dims=2, **TINY)
    model = METHODS["simclr"](encoder, dim, proj_hidden=64, proj_dim=32, temperature=0.2)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        a = torch.stack([views(x) for x in images]).float()
        b = torch.stack([views(x) for x in images]).float()
        loss = model(a, b)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert model.embed(images[:4]).shape == (4, dim)
