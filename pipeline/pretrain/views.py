"""The data path of pretraining: a cached deterministic part, and random views made on the device.

Deterministic work (read the NIfTI, scale intensities, bring to size) runs once per image into MONAI's
``CacheDataset``; fetches go through ``ToDeviced`` (to the GPU when there is one), and the random view
recipe runs on each whole batch there, in ``ThreadDataLoader``'s thread. Each transform is written once for
``spatial_dims`` 2 and 3.
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
    EnsureTyped,
    MapTransform,
    Randomizable,
    RandSpatialCropd,
    Resize,
    Resized,
    SelectItemsd,
    SpatialPadd,
    ToDeviced,
)
from torch.nn import functional as F

from pipeline.pretrain.volumes import load_volume, normalise

KEY = "image"
VIEWS = ("view_a", "view_b")
INDEX = "index"  # an image's position in the training set: MoCo keeps an image's own old keys out of its negatives


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


def views(
    spatial_dims: int,
    size: int,
    method: str,
    crop_min: float = 0.5,
    flip_axes: Sequence[int] = (0,),
    intensity: float = 1.0,
) -> RandViewd:
    """The view recipe of ``method``: MAE only crops and flips, since its masking is the augmentation."""
    return RandViewd(spatial_dims, size, crop_min, flip_axes, 0.0 if method == "mae" else intensity)


class RandViewd(Randomizable, MapTransform):
    """A batch ``d['image']`` (B, C, *spatial), on any device, -> one random view of each image, (B, C, *size).

    2D: a random crop of ``crop_min`` to all of each side, resized to ``size``; 3D: a ``size`` patch. Flips
    along ``flip_axes`` only (anatomy has an up and a down). With ``intensity`` > 0, gamma, blur and noise
    follow with probabilities scaled by it: intensity can be the diagnostic cue (a hazy lung), so how much
    invariance to teach is a setting.

    The whole batch goes through one ``grid_sample`` (crop, resize and flip are one affine map per image)
    and a few tensor operations, on the training device: per-image transforms in a loader cost more than
    the model's step on small images, and on a GPU they would leave it waiting. Parameters come from the
    transform's numpy random state, so ``set_random_state`` makes an epoch's views reproducible.
    """

    def __init__(
        self,
        spatial_dims: int,
        size: int,
        crop_min: float = 0.5,
        flip_axes: Sequence[int] = (0,),
        intensity: float = 1.0,
        keys: Sequence[Hashable] = (KEY,),
    ) -> None:
        MapTransform.__init__(self, keys)
        self.spatial_dims, self.size, self.crop_min = spatial_dims, size, crop_min
        self.flip_axes = [a for a in flip_axes if a < spatial_dims]
        self.intensity = intensity

    def randomize(self, data: Any = None) -> None:
        """Parameters are drawn per batch in ``view``, sized by the batch."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.view(torch.as_tensor(d[key]))
        return d

    def view(self, x: torch.Tensor) -> torch.Tensor:
        x = self._geometry(x.float())
        if self.intensity > 0:
            x = self._gamma(x, self._chosen(x, 0.8))
            x = self._blur(x, self._chosen(x, 0.3))
            x = self._noise(x, self._chosen(x, 0.5))
        return x

    def _chosen(self, x: torch.Tensor, prob: float) -> np.ndarray:
        return self.R.random_sample(x.shape[0]) < prob * self.intensity

    def _geometry(self, x: torch.Tensor) -> torch.Tensor:
        """Crop, resize and flip as one affine map per image, exact on whole voxels when nothing is resized."""
        batch, dims = x.shape[0], self.spatial_dims
        theta = np.zeros((batch, dims, dims + 1))
        for axis, n in enumerate(x.shape[2:]):
            low, high = (max(1, round(n * self.crop_min)), n) if dims == 2 else (self.size, self.size)
            side = self.R.randint(low, high + 1, size=batch)
            offset = np.floor(self.R.random_sample(batch) * (n - side + 1))
            sign = np.where(self.R.random_sample(batch) < 0.5, -1.0, 1.0) if axis in self.flip_axes else 1.0
            row = dims - 1 - axis  # affine_grid orders coordinates (x, y, z): the last spatial axis first
            theta[:, row, row] = sign * side / n
            theta[:, row, dims] = (2 * offset + side) / n - 1
        out = [batch, x.shape[1], *(self.size,) * dims]
        grid = F.affine_grid(torch.as_tensor(theta, dtype=x.dtype, device=x.device), out, align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _per_image(self, values: np.ndarray, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(values, dtype=x.dtype, device=x.device).view(-1, *(1,) * (x.dim() - 1))

    def _gamma(self, x: torch.Tensor, chosen: np.ndarray) -> torch.Tensor:
        """Gamma in (0.7, 1.5) on each image's own [min, max] range, as MONAI's ``AdjustContrast``."""
        gamma = self._per_image(np.where(chosen, self.R.uniform(0.7, 1.5, x.shape[0]), 1.0), x)
        low = x.amin(dim=tuple(range(1, x.dim())), keepdim=True)
        span = x.amax(dim=tuple(range(1, x.dim())), keepdim=True) - low
        return ((x - low) / (span + 1e-7)).clamp(min=0) ** gamma * span + low

    def _blur(self, x: torch.Tensor, chosen: np.ndarray) -> torch.Tensor:
        """Gaussian blur, sigma in (0.25, 1) per axis and image: a grouped separable convolution per axis."""
        dims, groups = self.spatial_dims, x.shape[0] * x.shape[1]
        taps = torch.arange(-4, 5, dtype=x.dtype, device=x.device)  # 4 sigma of the largest sigma
        conv = (F.conv2d, F.conv3d)[dims - 2]
        flat = x.reshape(1, groups, *x.shape[2:])  # one group per image and channel
        for axis in range(dims):
            sigma = np.repeat(np.where(chosen, self.R.uniform(0.25, 1.0, x.shape[0]), 1e-3), x.shape[1])  # 1e-3: none
            sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)[:, None]
            kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma**2))
            shape = [groups, 1] + [taps.numel() if a == axis else 1 for a in range(dims)]
            pad = [0, 0] * dims
            pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = 4  # F.pad lists the last axis first
            flat = conv(
                F.pad(flat, pad, mode="replicate"), (kernel / kernel.sum(1, keepdim=True)).view(shape), groups=groups
            )
        return flat.view_as(x)

    def _noise(self, x: torch.Tensor, chosen: np.ndarray) -> torch.Tensor:
        """Gaussian noise of a std drawn in (0, 0.05), as MONAI's ``RandGaussianNoise``."""
        std = self._per_image(np.where(chosen, self.R.uniform(0, 0.05, x.shape[0]), 0.0), x)
        noise = torch.randn(x.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype)
        return x + std * noise

    def _generator(self, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(int(self.R.randint(2**31)))


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
