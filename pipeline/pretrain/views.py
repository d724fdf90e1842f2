"""The data path of pretraining: the cached deterministic part, and two random views of each batch.

Deterministic work (``pipeline.data.transforms``) runs once per image into MONAI's ``CacheDataset``; fetches
go through ``ToDeviced`` (to the GPU when there is one), and the random view recipe
(``pipeline.data.augment``) runs on each whole batch there, in ``ThreadDataLoader``'s thread.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset
from monai.transforms import Compose, EnsureTyped, Randomizable, RandSpatialCropd, ToDeviced

from pipeline.data.augment import RandViewd
from pipeline.data.transforms import INDEX, KEY, context, deterministic

VIEWS = ("view_a", "view_b")


class ViewPairs(Randomizable):
    """``ThreadDataLoader``'s collate: the cached images of a batch -> ``{'view_a': ..., 'view_b': ...,
    'index': ...}``, two views of each (made in the loader's thread while the model trains on the previous
    batch) and each image's index in the ``dataset``."""

    def __init__(self, view: RandViewd) -> None:
        self.view = view

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> ViewPairs:
        self.view.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """The randomness lives in ``view``."""

    def __call__(self, items: Sequence[Mapping[Hashable, Any]]) -> dict[str, torch.Tensor]:
        images = torch.stack([torch.as_tensor(item[KEY]) for item in items])
        index = torch.as_tensor([item[INDEX] for item in items], dtype=torch.long)
        return {INDEX: index} | {name: self.view.view(images) for name in VIEWS}


def dataset(
    rows: Sequence[Mapping[str, Any]],
    spatial_dims: int,
    size: int,
    device: torch.device | str = "cpu",
    cache_rate: float = 1.0,
    workers: int = 1,
    volume_side: int = 128,
) -> CacheDataset:
    """Manifest rows (``image`` path, ``modality``, optional ``slice``) -> cached images on ``device``.

    The deterministic part is cached; each fetch moves the cached array to ``device``, where ``ViewPairs``
    makes the batch's views. Volumes differ in shape, so 3D first cuts a random ``context(size)`` patch
    (seed it with ``seed_epoch`` through ``dataset.transform``).
    """
    steps = list(deterministic(spatial_dims, size, volume_side).transforms)
    if spatial_dims == 3:
        steps.append(RandSpatialCropd(KEY, (context(size),) * 3, random_size=False))
    steps += [EnsureTyped(KEY, track_meta=False), ToDeviced(KEY, device=device)]
    items = [dict(row) | {INDEX: i} for i, row in enumerate(rows)]
    return CacheDataset(items, Compose(steps), cache_rate=cache_rate, num_workers=workers, progress=False)
