"""The pretraining data path on real ingested images: cached deterministic part, random views per batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import ThreadDataLoader

from pipeline.data.augment import RandViewd, views
from pipeline.data.transforms import INDEX, KEY, LoadVolumed, centred, context, deterministic
from pipeline.pretrain.views import VIEWS, ViewPairs, dataset


def _rows(out, manifest, kind):
    return [{KEY: str(out / r.output_path), "modality": r.modality} for r in manifest.itertuples() if kind(r)]


def _pairs(ds, view, batch_size):
    return next(iter(ThreadDataLoader(ds, batch_size=batch_size, collate_fn=ViewPairs(view))))


def test_2d_view_pairs_differ_and_keep_their_size(sample_manifest):
    out, manifest = sample_manifest
    ds = dataset(_rows(out, manifest, lambda r: r.kind == "image"), 2, 48)
    batch = _pairs(ds, views(2, 48, "simclr").set_random_state(seed=0), 8)
    a, b = (batch[name] for name in VIEWS)
    assert a.shape == b.shape == (8, 1, 48, 48)
    assert float(a.min()) >= -0.5 and float(a.max()) <= 1.5  # [0, 1] images, plus contrast and noise
    assert not torch.equal(a, b)


def test_each_pair_carries_its_images_position_in_the_training_set(sample_manifest):
    """MoCo's queue needs it to tell an image's own older keys from other images'."""
    out, manifest = sample_manifest
    rows = _rows(out, manifest, lambda r: r.kind == "image")
    ds = dataset(rows, 2, 48)
    loader = ThreadDataLoader(ds, batch_size=5, shuffle=True, collate_fn=ViewPairs(views(2, 48, "moco")))
    batches = list(loader)
    seen = [batch[INDEX] for batch in batches]
    assert all(i.dtype == torch.long and len(i) == len(batch["view_a"]) for i, batch in zip(seen, batches, strict=True))
    assert sorted(torch.cat(seen).tolist()) == list(range(len(rows)))
    first = seen[0][0].item()
    assert torch.equal(torch.as_tensor(ds[first][KEY]), torch.as_tensor(dataset([rows[first]], 2, 48)[0][KEY]))


def test_the_cache_holds_the_deterministic_part_only(sample_manifest):
    out, manifest = sample_manifest
    ds = dataset(_rows(out, manifest, lambda r: r.kind == "image"), 2, 48)
    cached = ds._cache[0][KEY]
    assert tuple(cached.shape) == (1, 48, 48) and float(cached.min()) >= 0.0 and float(cached.max()) <= 1.0
    assert torch.equal(torch.as_tensor(ds[0][KEY]), torch.as_tensor(cached))
    view = views(2, 48, "mae").set_random_state(seed=0)
    first, second = (view.view(torch.as_tensor(cached)[None]) for _ in range(2))
    assert not torch.equal(first, second)  # fresh views of the same cached image


def test_3d_pairs_are_patches_of_volumes_of_any_shape(sample_manifest):
    out, manifest = sample_manifest
    rows = _rows(out, manifest, lambda r: r.kind == "dicom" and len(r.shape) == 3 and r.shape[2] > 1)
    assert len({tuple(r.shape) for r in manifest.itertuples() if r.kind == "dicom" and len(r.shape) == 3}) > 1
    ds = dataset(rows, 3, 32, volume_side=64)
    batch = _pairs(ds, views(3, 32, "mae"), len(rows))
    assert batch["view_a"].shape == (len(rows), 1, 32, 32, 32)
    fixed = centred(3, 32, 64)(dict(rows[0]))[KEY]
    assert tuple(fixed.shape) == (1, 32, 32, 32)


def _images(spatial_dims: int, side: int, batch: int = 6) -> torch.Tensor:
    return torch.rand(batch, 1, *(side,) * spatial_dims, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_without_crop_flip_or_intensity_a_view_is_the_image(spatial_dims):
    x = _images(spatial_dims, 12)
    view = RandViewd(spatial_dims, 12, crop_min=1.0, flip_axes=(), intensity=0.0)
    assert torch.allclose(view.view(x), x, atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_flips_turn_the_named_axis_only(spatial_dims):
    x = _images(spatial_dims, 10, batch=16)
    out = RandViewd(spatial_dims, 10, crop_min=1.0, flip_axes=(0,), intensity=0.0).set_random_state(seed=1).view(x)
    flipped = [torch.allclose(o, i.flip(1), atol=1e-5) for o, i in zip(out, x, strict=True)]
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x, strict=True)]
    assert all(f != s for f, s in zip(flipped, same, strict=True))  # every view is one or the other
    assert 0 < sum(flipped) < len(x)


def test_a_3d_view_is_an_exact_patch_of_its_context():
    x = _images(3, 10, batch=4)
    out = RandViewd(3, 8, flip_axes=(), intensity=0.0).set_random_state(seed=2).view(x)
    for o, i in zip(out, x, strict=True):
        patches = i.unfold(1, 8, 1).unfold(2, 8, 1).unfold(3, 8, 1)  # every 8^3 patch, by offset
        assert (patches - o[0]).abs().amax(dim=(-3, -2, -1)).min() < 1e-5


def test_views_repeat_under_the_same_seed_and_change_under_another():
    x = _images(2, 32)
    view = views(2, 32, "simclr")
    a = view.set_random_state(seed=3).view(x)
    b = view.set_random_state(seed=3).view(x)
    c = view.set_random_state(seed=4).view(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_slice_is_scaled_with_its_whole_volume(sample_manifest):
    out, manifest = sample_manifest
    row = next(r for r in manifest.itertuples() if r.kind == "dicom" and len(r.shape) == 3 and r.shape[2] >= 32)
    item = {KEY: str(out / row.output_path), "modality": row.modality}
    volume = LoadVolumed()(item)[KEY]
    for index in (0, row.shape[2] // 2):
        assert np.array_equal(LoadVolumed()({**item, "slice": index})[KEY], volume[..., index])


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_blur_smooths_the_chosen_images_only(spatial_dims):
    x = _images(spatial_dims, 16, batch=4)
    chosen = np.array([True, False, True, False])
    out = RandViewd(spatial_dims, 16).set_random_state(seed=5)._blur(x, chosen)
    assert torch.allclose(out[~torch.as_tensor(chosen)], x[~torch.as_tensor(chosen)], atol=1e-5)
    assert all(float(out[i].std()) < 0.8 * float(x[i].std()) for i in (0, 2))  # white noise loses variance
    assert torch.allclose(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=0.02)  # and keeps its level


def test_a_thin_volume_keeps_its_voxels_at_the_volume_scale():
    """Two 512 x 512 slices at a longest side of 128: a 128 x 128 x 1 slab padded to the patch context, not a
    side rounded to zero and a volume of padding alone."""
    rng = np.random.default_rng(0)
    volume = (rng.random((1, 512, 512, 2)) * 100).astype(np.float32)
    out = deterministic(3, 32)({"image": volume, "modality": "MR"})["image"]
    assert tuple(out.shape) == (1, 128, 128, context(32))
    slab = np.asarray(out)[0].reshape(128 * 128, -1)
    filled = slab.max(axis=0) > 0
    assert filled.sum() == 1 and slab[:, filled].mean() > 0.3  # the two slices, averaged; then padding
