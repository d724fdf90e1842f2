"""Random views of a batch, on the training device: the augmentation pretraining and fine-tuning share.

``RandViewd`` turns a batch of cached images into one random view of each (crop, resize, flip, and
intensity changes); ``views`` is the recipe a method uses. Pretraining makes two views of each image
(``pipeline.pretrain.views``); fine-tuning makes one, with crops and flips only.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable
from torch.nn import functional as F

from pipeline.data.transforms import KEY


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
