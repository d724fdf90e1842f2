"""The pretraining data path on real ingested images: cached deterministic part, random view pairs."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import ThreadDataLoader

from pipeline.pretrain.views import KEY, VIEWS, LoadVolumed, centred, dataset, views


def _rows(out, manifest, kind):
    return [{KEY: str(out / r.output_path), "modality": r.modality} for r in manifest.itertuples() if kind(r)]


def test_2d_view_pairs_differ_and_keep_their_size(sample_manifest):
    out, manifest = sample_manifest
    ds = dataset(_rows(out, manifest, lambda r: r.kind == "image"), 2, 48, views(2, 48, "simclr"))
    ds.transform.set_random_state(seed=0)
    batch = next(iter(ThreadDataLoader(ds, batch_size=8)))
    a, b = (batch[name] for name in VIEWS)
    assert a.shape == b.shape == (8, 1, 48, 48)
    assert float(a.min()) >= -0.5 and float(a.max()) <= 1.5  # [0, 1] images, plus contrast and noise
    assert not torch.equal(a, b)


def test_the_cache_holds_the_deterministic_part_only(sample_manifest):
    out, manifest = sample_manifest
    ds = dataset(_rows(out, manifest, lambda r: r.kind == "image"), 2, 48, views(2, 48, "mae"))
    cached = ds._cache[0][KEY]
    assert tuple(cached.shape) == (1, 48, 48) and float(cached.min()) >= 0.0 and float(cached.max()) <= 1.0
    first, second = ds[0], ds[0]
    assert not torch.equal(torch.as_tensor(first["view_a"]), torch.as_tensor(second["view_a"]))  # fresh views


def test_3d_pairs_are_patches_of_volumes_of_any_shape(sample_manifest):
    out, manifest = sample_manifest
    rows = _rows(out, manifest, lambda r: r.kind == "dicom" and len(r.shape) == 3 and r.shape[2] > 1)
    assert len({tuple(r.shape) for r in manifest.itertuples() if r.kind == "dicom" and len(r.shape) == 3}) > 1
    ds = dataset(rows, 3, 32, views(3, 32, "mae"), volume_side=64)
    batch = next(iter(ThreadDataLoader(ds, batch_size=len(rows))))
    assert batch["view_a"].shape == (len(rows), 1, 32, 32, 32)
    fixed = centred(3, 32, 64)(dict(rows[0]))[KEY]
    assert tuple(fixed.shape) == (1, 32, 32, 32)


def test_a_slice_is_scaled_with_its_whole_volume(sample_manifest):
    out, manifest = sample_manifest
    row = next(r for r in manifest.itertuples() if r.kind == "dicom" and len(r.shape) == 3 and r.shape[2] >= 32)
    item = {KEY: str(out / row.output_path), "modality": row.modality}
    volume = LoadVolumed()(item)[KEY]
    for index in (0, row.shape[2] // 2):
        assert np.array_equal(LoadVolumed()({**item, "slice": index})[KEY], volume[..., index])
