"""SSL methods on real images: MONAI encoders, each method's loss falls in a few steps of a tiny network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SAMPLE, TINY_VIT
from monai.losses import ContrastiveLoss
from monai.transforms import Compose, RandFlip, RandGaussianNoise, RandSpatialCrop
from PIL import Image

from models import METHODS
from models.encoders import build_encoder
from models.moco import info_nce

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


SMALL_HEADS = {
    "simclr": {"proj_hidden": 64, "proj_dim": 32, "temperature": 0.2},
    "moco": {"proj_hidden": 64, "proj_dim": 32, "queue_size": 48, "temperature": 0.2, "momentum": 0.9},
    "dino": {
        "head_hidden": 64,
        "bottleneck_dim": 32,
        "out_dim": 64,
        "teacher_temp": 0.07,
        "warmup_teacher_temp": 0.07,
        "momentum": 0.99,
    },
}


def _build(method: str, spatial_dims: int = 2, size: int = 48):
    if method == "mae":
        model = METHODS["mae"]((size,) * spatial_dims, (8,) * spatial_dims, **TINY_VIT)
        return model, model.feature_dim
    encoder, dim = build_encoder(spatial_dims=spatial_dims, **TINY)
    return METHODS[method](encoder, dim, **SMALL_HEADS[method]), dim


def _train(method: str, steps: int, probe=None) -> list[float]:
    """A few optimiser steps of a tiny network on the sample's 24 real chest X-rays; returns the losses."""
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
    model, dim = _build(method)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3 if method != "dino" else 1e-3)
    losses = []
    for _ in range(steps):
        a = torch.stack([views(x) for x in images]).float()
        b = torch.stack([views(x) for x in images]).float()
        loss = model(a, b)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        model.after_step()
        losses.append(probe(model, a, b) if probe else loss.item())
    assert model.embed(images[:4, :, :48, :48]).shape == (4, dim)
    return losses


def test_simclr_loss_falls():
    losses = _train("simclr", 30)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), np.round(losses, 3)


@pytest.mark.slow  # trains until the loss has moved
def test_moco_loss_falls_once_the_queue_holds_real_keys():
    """The queue starts as random vectors (easy negatives); compare from when it holds this data's keys."""
    losses = _train("moco", 40)
    full = SMALL_HEADS["moco"]["queue_size"] // 24 + 1
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[full : full + 5]), np.round(losses, 3)


def test_moco_keeps_an_images_own_older_keys_out_of_its_negatives():
    """24 images and a queue of 48: after one step each query's previous key waits in the queue; the loss
    must be InfoNCE over the other images' keys only."""
    torch.manual_seed(0)
    images = _cxr_batch()[:, :, :48, :48]
    index = torch.arange(len(images))
    model, _ = _build("moco")
    model(images, images.flip(-1), index)
    queue, owners = model.queue.clone(), model.queue_index.clone()
    assert sorted(owners[owners >= 0].tolist()) == index.tolist()
    a, b = images.flip(-2), images
    loss = model(a, b, index)
    with torch.no_grad():
        q, k = (F.normalize(net(x), dim=1) for net, x in ((model.online, a), (model.target, b)))
    temperature = SMALL_HEADS["moco"]["temperature"]
    expected = torch.stack(
        [
            -torch.log_softmax(
                torch.cat([q[i : i + 1] @ k[i : i + 1].T, q[i : i + 1] @ queue[owners != i].T], 1)[0] / temperature, 0
            )[0]
            for i in range(len(q))
        ]
    ).mean()
    assert torch.allclose(loss, expected, atol=1e-5), (float(loss), float(expected))
    unmasked = info_nce(q, k, queue, temperature)
    assert unmasked > loss  # the own older key is the hardest "negative": it was another view of the query
    assert torch.equal(model.queue_index[owners < 0][: len(index)], index)


def _distillation_gap(model, a, b) -> float:
    """KL from the centred teacher to the student: what the student's gradient actually reduces."""
    with torch.no_grad():
        t = F.softmax((model.target(a) - model.center) / model.teacher_temp, dim=-1)
        s = F.log_softmax(model.online(b) / model.student_temp, dim=-1)
        return float((t * (t.clamp_min(1e-12).log() - s)).sum(-1).mean())


@pytest.mark.slow  # trains until the loss has moved
def test_dino_student_closes_in_on_its_teacher():
    """DINO's cross-entropy also carries the teacher's entropy, which centring moves; the KL part falls."""
    gaps = _train("dino", 40, probe=_distillation_gap)
    assert np.mean(gaps[-5:]) < 0.8 * np.mean(gaps[:5]), np.round(gaps, 3)


def test_mae_reconstruction_loss_falls():
    losses = _train("mae", 30)  # per-patch normalised targets: the floor is high, the fall is steady
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), np.round(losses, 3)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_in_3d_on_a_real_volume(method):
    """One step on 32^3 patches of a real MR volume (the sample's dcm_qa_ts reference)."""
    import nibabel as nib

    volume = np.asarray(nib.load(SAMPLE / "dcm_qa_ts/Ref/1.nii.gz").get_fdata(), dtype=np.float32)
    volume = (volume - volume.mean()) / (volume.std() + 1e-6)
    patches = torch.from_numpy(np.stack([volume[:32, :32, :32], volume[32:, 32:, :32]])[:, None])
    torch.manual_seed(0)
    model, dim = _build(method, spatial_dims=3, size=32)
    loss = model(patches, patches.flip(-1))
    loss.backward()
    assert torch.isfinite(loss)
    assert model.embed(patches).shape == (2, dim)


def test_momentum_target_follows_online_slowly():
    encoder, dim = build_encoder(spatial_dims=2, **TINY)
    model = METHODS["moco"](encoder, dim, **SMALL_HEADS["moco"])
    online, target = next(model.online.parameters()), next(model.target.parameters())
    before = target.detach().clone()
    with torch.no_grad():
        online.add_(1.0)
    model.after_step()
    assert torch.allclose(target, 0.9 * before + 0.1 * online)
    assert not target.requires_grad


def test_schedules_anneal_momentum_and_warm_the_teacher():
    encoder, dim = build_encoder(spatial_dims=2, **TINY)
    model = METHODS["dino"](encoder, dim, out_dim=64, teacher_temp=0.07, warmup_teacher_temp=0.04, momentum=0.9)
    assert model.teacher_temp == 0.04 and model.momentum == 0.9
    model.set_progress(0.15)  # half-way through a warm-up of 0.3 of training
    assert model.teacher_temp == pytest.approx(0.055)
    model.set_progress(1.0)
    assert model.teacher_temp == pytest.approx(0.07) and model.momentum == pytest.approx(1.0)


def test_mae_encoder_is_a_view_of_the_trained_weights():
    model, _ = _build("mae")
    encoder = model.encoder
    assert sum(p.numel() for p in encoder.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        model.net.cls_token.add_(1.0)
    assert torch.equal(encoder.cls_token, model.net.cls_token)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_under_cpu_autocast(method):
    """bfloat16 autocast (AMP) reaches every buffer write: MoCo's queue, DINO's centre, MAE's mask tokens."""
    torch.manual_seed(0)
    model, _ = _build(method, size=32)
    images = torch.rand(8, 1, 32, 32)
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(images, images.flip(-1))
        loss.backward()
        model.after_step()
    assert torch.isfinite(loss)


def test_simclr_loss_is_float32_under_autocast():
    """Under bfloat16 autocast the NT-Xent is computed from float32 projections: the loss equals the float32
    loss of the same (half-precision) projections, not the coarser one of MONAI's ops left in bfloat16."""
    torch.manual_seed(0)
    model, _ = _build("simclr", size=32)
    images = torch.rand(16, 1, 32, 32)
    captured = []
    model.projector.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(images, images.flip(-1))
    z_a, z_b = captured
    assert z_a.dtype == torch.bfloat16  # the network itself does run in half precision
    exact = model.loss(z_a.float(), z_b.float())
    assert loss.dtype == torch.float32 and torch.allclose(loss, exact, rtol=1e-6, atol=1e-6)
