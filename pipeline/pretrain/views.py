"""The data path of pretraining: a cached deterministic part, and random views made on the device.

Deterministic work (read the NIfTI, scale intensities, bring to size) runs once per image into MONAI's
``CacheDataset``; the random view recipe runs every step, after ``ToDeviced`` when there is a GPU. Each
transform is written once for ``spatial_dims`` 2 and 3.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.data import CacheDataset
from monai.transforms import (
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandSpatialCropd,
    Resized,
    SpatialPadd,
    ToDeviced,
)

from pipeline.pretrain.volumes import load_volume, normalise

KEY = "image"


class LoadVolumed(MapTransform):
    """Reads ``d['image']`` (a NIfTI path from the manifest) into a [0, 1] float array, by ``d['modality']``."""

    def __init__(self, keys: Sequence[Hashable] = (KEY,), grey: bool = True) -> None:
        super().__init__(keys)
        self.grey = grey

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            array = load_volume(d[key])
            if self.grey and array.shape[0] > 1:
                array = array.mean(axis=0, keepdims=True)  # SSL on grey anatomy; colour is rare and incidental
            d[key] = normalise(array, str(d.get("modality", "")))
        return d


def deterministic(spatial_dims: int, size: int) -> Compose:
    """Cached once: 2D images resized to ``size``; 3D volumes padded to at least ``size`` for cropping."""
    shape = (size,) * spatial_dims
    bring_to_size = Resized(KEY, shape) if spatial_dims == 2 else SpatialPadd(KEY, shape)
    return Compose([LoadVolumed(), bring_to_size])


def views(spatial_dims: int, size: int, method: str, device: torch.device | str = "cpu") -> Compose:
    """One random view. Contrastive and distillation methods get the strong recipe; MAE only crops and
    flips, since its masking is the augmentation."""
    crop_size = (size * 3 // 4,) * spatial_dims if spatial_dims == 2 else (size,) * 3
    steps: list = [ToDeviced(KEY, device=device), RandSpatialCropd(KEY, crop_size, random_size=False)]
    if spatial_dims == 2:
        steps.append(Resized(KEY, (size,) * 2))
    steps += [RandFlipd(KEY, prob=0.5, spatial_axis=axis) for axis in range(spatial_dims)]
    if method != "mae":
        steps += [
            RandAdjustContrastd(KEY, prob=0.8, gamma=(0.7, 1.5)),
            RandGaussianSmoothd(KEY, prob=0.3, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.25, 1.0)),
            RandGaussianNoised(KEY, prob=0.5, std=0.05),
        ]
    return Compose(steps)


def dataset(
    rows: Sequence[Mapping[str, Any]], spatial_dims: int, size: int, cache_rate: float = 1.0, workers: int = 0
) -> CacheDataset:
    """Manifest rows (``image`` path and ``modality``) through the deterministic part, cached in memory."""
    return CacheDataset(
        list(rows), deterministic(spatial_dims, size), cache_rate=cache_rate, num_workers=workers, progress=False
    )
