"""The data path of pretraining: a cached deterministic part, and random views made on the device.

Deterministic work (read the NIfTI, scale intensities, bring to size) runs once per image into MONAI's
``CacheDataset``; the random view recipe runs on every fetch, after ``ToDeviced`` (on the GPU when there is
one), in ``ThreadDataLoader``'s thread. Each transform is written once for ``spatial_dims`` 2 and 3.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    MapTransform,
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    Randomizable,
    RandSpatialCropd,
    Resized,
    SelectItemsd,
    SpatialPadd,
    ToDeviced,
    Transform,
)

from pipeline.pretrain.volumes import load_volume, normalise

KEY = "image"
VIEWS = ("view_a", "view_b")


class LoadVolumed(MapTransform):
    """Reads ``d['image']`` (a NIfTI path from the manifest, or an array as ``load_volume`` returns it:
    channels first, real-world values) into a [0, 1] float array, by ``d['modality']``.

    With ``d['slice']`` set, keeps that slice of the volume, scaled with the whole volume's statistics so
    every slice of one scan shares one intensity scale.
    """

    def __init__(self, keys: Sequence[Hashable] = (KEY,), grey: bool = True) -> None:
        super().__init__(keys)
        self.grey = grey

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            array = d[key] if isinstance(d[key], np.ndarray) else load_volume(d[key])
            if self.grey and array.shape[0] > 1:
                array = array.mean(axis=0, keepdims=True)  # SSL on grey anatomy; colour is rare and incidental
            array = normalise(array, str(d.get("modality", "")))
            if d.get("slice") is not None:
                array = np.ascontiguousarray(array[..., int(d["slice"])])
            d[key] = array
        return d


def context(size: int) -> int:
    """3D: side of the patch cut in the loader, from which each view then crops ``size``; the margin lets
    two views of one patch differ in position as well as in intensity."""
    return size * 5 // 4


def deterministic(spatial_dims: int, size: int, volume_side: int = 128) -> Compose:
    """Cached once: 2D images (and slices) resized to ``size``; 3D volumes resized to a longest side of
    ``volume_side`` (one scale across scanners, bounded memory), then padded to at least ``context(size)``."""
    if spatial_dims == 2:
        return Compose([LoadVolumed(), Resized(KEY, (size, size)), SelectItemsd(KEY)])
    return Compose(
        [
            LoadVolumed(),
            Resized(KEY, volume_side, size_mode="longest"),
            SpatialPadd(KEY, (context(size),) * 3),
            SelectItemsd(KEY),  # only the array goes on to batching (row metadata holds None values)
        ]
    )


def centred(spatial_dims: int, size: int, volume_side: int = 128) -> Compose:
    """The deterministic part plus a centre crop of ``size``: the fixed input the kNN monitor embeds."""
    return Compose([deterministic(spatial_dims, size, volume_side), CenterSpatialCropd(KEY, (size,) * spatial_dims)])


def load_fixed(rows: Sequence[Mapping[str, Any]], spatial_dims: int, size: int, volume_side: int = 128) -> torch.Tensor:
    """The ``centred`` input of every row, stacked (N, 1, size, ...): small labelled sets, held in memory."""
    fixed = centred(spatial_dims, size, volume_side)
    return torch.stack([torch.as_tensor(fixed(dict(r))[KEY]).float() for r in rows])


def views(
    spatial_dims: int,
    size: int,
    method: str,
    crop_min: float = 0.5,
    flip_axes: Sequence[int] = (0,),
    intensity: float = 1.0,
) -> Compose:
    """One random view. 2D: a random crop of ``crop_min`` to all of the side, resized back; 3D: a ``size``
    patch. Flips along ``flip_axes`` only (anatomy has an up and a down). Contrastive and distillation
    methods add gamma, blur and noise with probabilities scaled by ``intensity``: intensity can be the
    diagnostic cue (a hazy lung), so how much invariance to teach is a setting. MAE only crops and flips,
    since its masking is the augmentation."""
    if spatial_dims == 2:
        low = max(1, round(size * crop_min))
        steps: list = [RandSpatialCropd(KEY, (low,) * 2, max_roi_size=(size,) * 2, random_size=True)]
        steps.append(Resized(KEY, (size,) * 2))
    else:
        steps = [RandSpatialCropd(KEY, (size,) * 3, random_size=False)]
    steps += [RandFlipd(KEY, prob=0.5, spatial_axis=axis) for axis in flip_axes if axis < spatial_dims]
    if method != "mae" and intensity > 0:
        steps += [
            RandAdjustContrastd(KEY, prob=0.8 * intensity, gamma=(0.7, 1.5)),
            RandGaussianSmoothd(
                KEY, prob=0.3 * intensity, sigma_x=(0.25, 1.0), sigma_y=(0.25, 1.0), sigma_z=(0.25, 1.0)
            ),
            RandGaussianNoised(KEY, prob=0.5 * intensity, std=0.05),
        ]
    return Compose(steps)


class TwoViewsd(Randomizable, Transform):
    """``{'image': x}`` -> ``{'view_a': view(x), 'view_b': view(x)}``: the pair every method trains on."""

    def __init__(self, view: Compose) -> None:
        self.view = view

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> TwoViewsd:
        self.view.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """The randomness lives in ``view``'s transforms."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return {name: self.view({KEY: data[KEY]})[KEY] for name in VIEWS}


def dataset(
    rows: Sequence[Mapping[str, Any]],
    spatial_dims: int,
    size: int,
    view: Compose,
    device: torch.device | str = "cpu",
    cache_rate: float = 1.0,
    workers: int = 1,
    volume_side: int = 128,
) -> CacheDataset:
    """Manifest rows (``image`` path, ``modality``, optional ``slice``) -> pairs of ``view`` on ``device``.

    The deterministic part is cached; each fetch then moves the cached array to ``device`` and makes two
    views there, which ``ThreadDataLoader`` runs in its thread while the model trains on the previous batch.
    Volumes differ in shape, so 3D first cuts a random ``context(size)`` patch. Seed it (``seed_epoch``)
    through ``dataset.transform``.
    """
    steps = list(deterministic(spatial_dims, size, volume_side).transforms)
    if spatial_dims == 3:
        steps.append(RandSpatialCropd(KEY, (context(size),) * 3, random_size=False))
    steps += [ToDeviced(KEY, device=device), TwoViewsd(view)]
    return CacheDataset(
        list(rows),
        Compose(steps),
        cache_rate=cache_rate,
        num_workers=workers,
        progress=False,
    )
