"""Masked image modelling, MAE-style: hide most patches, reconstruct their pixels from the rest.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022. The network is MONAI's
``MaskedAutoEncoderViT`` (2D or 3D); this module adds the patch targets, the loss on masked patches only,
and the embedding used downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from einops import rearrange
from monai.networks.nets import MaskedAutoEncoderViT
from torch import nn


def patchify(images: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
    """(B, C, *spatial) -> (B, patches, voxels per patch), patches in the order the ViT embeds them."""
    if images.ndim == 4:
        p1, p2 = patch_size
        return rearrange(images, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=p1, p2=p2)
    p1, p2, p3 = patch_size
    return rearrange(images, "b c (h p1) (w p2) (d p3) -> b (h w d) (p1 p2 p3 c)", p1=p1, p2=p2, p3=p3)


VIT_DEFAULTS = {
    "hidden_size": 384,
    "mlp_dim": 1536,
    "num_layers": 6,
    "num_heads": 6,
    "decoder_hidden_size": 192,
    "decoder_mlp_dim": 768,
    "decoder_num_layers": 2,
    "decoder_num_heads": 6,
}


def _to_float32(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return output.float()


class ViTEncoder(nn.Module):
    """The encoder half of a ``MaskedAutoEncoderViT``, unmasked: images -> mean of the patch tokens.

    It shares its modules with the autoencoder, so it is a view of the weights being trained, and the
    module that goes downstream once the decoder is dropped.
    """

    def __init__(self, net: MaskedAutoEncoderViT) -> None:
        super().__init__()
        self.patch_embedding, self.blocks, self.cls_token = net.patch_embedding, net.blocks, net.cls_token

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embedding(images)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = self.blocks(torch.cat((cls, tokens), dim=1))
        return tokens[:, 1:].mean(dim=1)


class MAE(nn.Module):
    """``forward(view_a, view_b)`` reconstructs the masked patches of both views; returns the mean MSE."""

    def __init__(
        self,
        img_size: Sequence[int],
        patch_size: Sequence[int],
        in_channels: int = 1,
        masking_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        **vit: int,
    ) -> None:
        """``vit`` sizes the network (``hidden_size``, ``num_layers``, ``decoder_*`` ...); unset keys take
        ``VIT_DEFAULTS``, a ViT-S-like encoder with a light decoder."""
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.norm_pix_loss = norm_pix_loss
        sizes = {**VIT_DEFAULTS, **vit}
        self.net = MaskedAutoEncoderViT(
            in_channels=in_channels,
            img_size=img_size,
            patch_size=patch_size,
            masking_ratio=masking_ratio,
            spatial_dims=len(patch_size),
            **sizes,
        )
        self.feature_dim = sizes["hidden_size"]
        # Under autocast the decoder embedding comes out in half precision, and MONAI then scatters it into
        # float32 mask tokens, which index_put refuses; casting that one output back keeps AMP usable.
        self.net.decoder_embed.register_forward_hook(_to_float32)

    def reconstruction_loss(self, images: torch.Tensor) -> torch.Tensor:
        predicted, mask = self.net(images)
        target = patchify(images, self.patch_size)
        if self.norm_pix_loss:  # per-patch normalised targets, as the MAE paper's best setting
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        per_patch = ((predicted - target) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1)

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``index`` unused: reconstruction compares an image only with itself."""
        return 0.5 * (self.reconstruction_loss(view_a) + self.reconstruction_loss(view_b))

    def set_progress(self, fraction: float) -> None:
        """No schedule: the masking ratio stays fixed."""

    def after_step(self) -> None:
        """Nothing outside the optimiser to update."""

    @property
    def encoder(self) -> ViTEncoder:
        return ViTEncoder(self.net)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Mean of the encoder's patch tokens over the whole, unmasked image."""
        return self.encoder(images)
