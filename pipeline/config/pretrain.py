"""The pretrain section: the method, its options, the networks' sizes, the views and the kNN monitor."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.config.base import Device, Name, Strict, ViewConfig, Views

Method = Literal["simclr", "moco", "dino", "mae"]


class EncoderConfig(Strict):
    widths: list[int] = Field(default_factory=lambda: [64, 128, 256, 512], min_length=1)
    layers: list[int] = Field(default_factory=lambda: [2, 2, 2, 2], min_length=1)


class SimCLROptions(Strict):
    """Keyword arguments of ``models.simclr.SimCLR`` (the defaults are the class's)."""

    proj_hidden: int = Field(default=512, ge=1)
    proj_dim: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.1, gt=0)


class MoCoOptions(Strict):
    """Keyword arguments of ``models.moco.MoCo``."""

    proj_hidden: int = Field(default=512, ge=1)
    proj_dim: int = Field(default=128, ge=1)
    queue_size: int = Field(default=4096, ge=1)
    temperature: float = Field(default=0.2, gt=0)
    momentum: float = Field(default=0.99, ge=0, le=1)


class DINOOptions(Strict):
    """Keyword arguments of ``models.dino.DINO``."""

    head_hidden: int = Field(default=512, ge=1)
    bottleneck_dim: int = Field(default=128, ge=1)
    out_dim: int = Field(default=1024, ge=1)
    teacher_temp: float = Field(default=0.07, gt=0)
    warmup_teacher_temp: float = Field(default=0.04, gt=0)
    warmup_fraction: float = Field(default=0.3, ge=0, le=1)
    student_temp: float = Field(default=0.1, gt=0)
    center_momentum: float = Field(default=0.9, ge=0, le=1)
    momentum: float = Field(default=0.996, ge=0, le=1)


class MAEOptions(Strict):
    """Keyword arguments of ``models.mae.MAE`` besides its ViT sizes (``pretrain.vit``)."""

    masking_ratio: float = Field(default=0.75, gt=0, lt=1)
    norm_pix_loss: bool = True


class MethodOptions(Strict):
    simclr: SimCLROptions = Field(default_factory=SimCLROptions)
    moco: MoCoOptions = Field(default_factory=MoCoOptions)
    dino: DINOOptions = Field(default_factory=DINOOptions)
    mae: MAEOptions = Field(default_factory=MAEOptions)


class ViTConfig(Strict):
    """The MAE encoder's and decoder's sizes (``models.mae.VIT_DEFAULTS``: a ViT-S-like encoder)."""

    hidden_size: int = Field(default=384, ge=1)
    mlp_dim: int = Field(default=1536, ge=1)
    num_layers: int = Field(default=6, ge=1)
    num_heads: int = Field(default=6, ge=1)
    decoder_hidden_size: int = Field(default=192, ge=1)
    decoder_mlp_dim: int = Field(default=768, ge=1)
    decoder_num_layers: int = Field(default=2, ge=1)
    decoder_num_heads: int = Field(default=6, ge=1)


class MonitorConfig(Strict):
    bank: Path | None = None
    query: Path | None = None
    query_fraction: float = Field(default=0.3, gt=0, lt=1)
    every: int = Field(default=5, ge=0)
    k: int = Field(default=20, ge=1)


class PretrainConfig(Strict):
    manifest: Path | None = None
    out: Path | None = None
    method: Method = "simclr"
    spatial_dims: Literal[2, 3] = 2
    size: int = Field(default=64, ge=8)
    volume_side: int = Field(default=128, ge=8)
    slices_per_volume: int = Field(default=8, ge=0)
    epochs: int = Field(default=100, ge=1)
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_epochs: int = Field(default=5, ge=0)
    seed: int = 0
    device: Device = "auto"
    amp: bool | None = None
    cache_rate: float = Field(default=1.0, ge=0, le=1)
    cache_workers: int = Field(default=1, ge=1)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    views: Views = Field(default_factory=ViewConfig)
    patch_size: int = Field(default=8, ge=1)
    vit: ViTConfig = Field(default_factory=ViTConfig)
    options: MethodOptions = Field(default_factory=MethodOptions)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    name: Name = "medssl"
    register_encoder: bool = True
    init: str | None = None
    exclude: list[Path] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shapes(self) -> PretrainConfig:
        if self.method == "mae" and self.size % self.patch_size:
            raise ValueError(f"size ({self.size}) must be a multiple of patch_size ({self.patch_size})")
        if len(self.encoder.widths) != len(self.encoder.layers):
            raise ValueError("encoder.widths and encoder.layers need one entry per stage each")
        return self
