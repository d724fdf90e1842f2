"""The deterministic half of every data path: read an ingested NIfTI, scale its intensities, bring it to size.

Training caches these once per image; evaluation, scoring, the shift report and the registered pyfunc run
the same ones, so a scan is seen alike by every stage (and a change here changes all of them at once, on
purpose). Each transform is written once for ``spatial_dims`` 2 and 3.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import CenterSpatialCropd, Compose, MapTransform, Resize, Resized, SelectItemsd, SpatialPadd

from pipeline.data.volumes import load_volume, normalise

KEY = "image"
INDEX = "index"  # an item's position in its dataset: MoCo keeps an image's own old keys out of its negatives


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


class ResizeLongestd(MapTransform):
    """Scales ``d['image']`` (C, *spatial) so its longest side is ``side``, in proportion, with no side below
    one voxel: MONAI's ``size_mode="longest"`` rounds a thin side (two slices of 512 x 512 at 128) to zero,
    and the padding after it turned such a volume into zeros alone."""

    def __init__(self, side: int, keys: Sequence[Hashable] = (KEY,)) -> None:
        super().__init__(keys)
        self.side = side

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            shape = d[key].shape[1:]
            d[key] = Resize([max(1, round(s * self.side / max(shape))) for s in shape])(d[key])
        return d


def context(size: int) -> int:
    """3D: side of the patch cut in the loader, from which each view then crops ``size``; the margin lets
    two views of one patch differ in position as well as in intensity."""
    return size * 5 // 4


def deterministic(spatial_dims: int, size: int, volume_side: int = 128) -> Compose:
    """Cached once: 2D images (and slices) resized to ``size``; 3D volumes resized to a longest side of
    ``volume_side`` (one scale across scanners, bounded memory), then padded to at least ``context(size)``."""
    keep = SelectItemsd((KEY, INDEX), allow_missing_keys=True)  # the array (and its index) go on to batching
    if spatial_dims == 2:
        return Compose([LoadVolumed(), Resized(KEY, (size, size)), keep])
    return Compose(
        [
            LoadVolumed(),
            ResizeLongestd(volume_side),
            SpatialPadd(KEY, (context(size),) * 3),
            keep,  # row metadata holds None values, which do not batch
        ]
    )


def centred(spatial_dims: int, size: int, volume_side: int = 128) -> Compose:
    """The deterministic part plus a centre crop of ``size``: the fixed input the kNN monitor embeds."""
    return Compose([deterministic(spatial_dims, size, volume_side), CenterSpatialCropd(KEY, (size,) * spatial_dims)])


def load_fixed(rows: Sequence[Mapping[str, Any]], spatial_dims: int, size: int, volume_side: int = 128) -> torch.Tensor:
    """The ``centred`` input of every row, stacked (N, 1, size, ...): small labelled sets, held in memory."""
    fixed = centred(spatial_dims, size, volume_side)
    return torch.stack([torch.as_tensor(fixed(dict(r))[KEY]).float() for r in rows])
