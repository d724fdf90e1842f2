"""The pretraining data path on real ingested images: cached deterministic part, random views."""

from __future__ import annotations

import torch
from monai.data import ThreadDataLoader

from pipeline.pretrain.views import KEY, dataset, views


def _rows(out, manifest, kind):
    return [{KEY: str(out / r.output_path), "modality": r.modality} for r in manifest.itertuples() if kind(r)]


def test_2d_views_differ_and_keep_their_size(sample_manifest):
    out, manifest = sample_manifest
    ds = dataset(_rows(out, manifest, lambda r: r.kind == "image"), spatial_dims=2, size=48)
    batch = next(iter(ThreadDataLoader(ds, batch_size=8)))[KEY]
    assert batch.shape == (8, 1, 48, 48) and float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    make = views(2, 48, "simclr")
    make.set_random_state(seed=0)
    a = torch.stack([make({KEY: x})[KEY] for x in batch])
    b = torch.stack([make({KEY: x})[KEY] for x in batch])
    assert a.shape == b.shape == (8, 1, 48, 48)
    assert not torch.equal(a, b)


def test_3d_views_are_patches_of_the_volume(sample_manifest):
    out, manifest = sample_manifest
    rows = _rows(out, manifest, lambda r: r.kind == "dicom" and len(r.shape) == 3 and r.shape[2] >= 32)
    ds = dataset(rows, spatial_dims=3, size=32)
    sample = ds[0][KEY]
    assert sample.ndim == 4 and min(sample.shape[1:]) >= 32
    view = views(3, 32, "mae")({KEY: sample})[KEY]
    assert view.shape == (1, 32, 32, 32)
