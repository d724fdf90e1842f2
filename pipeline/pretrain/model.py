"""The network pretraining trains: the method's module from config, the weights it may start from, the
learning-rate schedule, and the fingerprint that names a run by what it trains.
"""

from __future__ import annotations

import hashlib
import json
import math

from torch import nn

from models import MAE, METHODS
from models.detectors import Classifier, NormalBank
from models.encoders import build_encoder
from models.momentum import MomentumPair
from pipeline.config import PretrainConfig, TrackingConfig
from pipeline.errors import PretrainError, RegistryError
from pipeline.registry.store import load_model

# Settings that change what is trained; the others (paths, cache, monitor, device) can differ on resume.
_TRAINING_KEYS = ("method", "spatial_dims", "size", "volume_side", "slices_per_volume", "epochs", "batch_size")
_TRAINING_KEYS += ("lr", "weight_decay", "warmup_epochs", "seed", "encoder", "views", "patch_size", "vit", "options")
_TRAINING_KEYS += ("init",)


def build_model(cfg: PretrainConfig, in_channels: int = 1) -> nn.Module:
    """The method's module from config (its options are checked there, against the class's arguments)."""
    dims, options = cfg.spatial_dims, getattr(cfg.options, cfg.method).model_dump()
    if cfg.method == "mae":
        return MAE((cfg.size,) * dims, (cfg.patch_size,) * dims, in_channels, **cfg.vit.model_dump(), **options)
    encoder, feature_dim = build_encoder(dims, in_channels, cfg.encoder.widths, cfg.encoder.layers)
    return METHODS[cfg.method](encoder, feature_dim, **options)


def start_from(model: nn.Module, ref: str, tracking: TrackingConfig) -> None:
    """Load the encoder ``ref`` names (or a detector's encoder) into ``model``'s encoder, and into its
    momentum copy, so training continues from it."""
    try:
        source, _ = load_model(ref, tracking)
    except RegistryError as exc:
        raise PretrainError(f"pretrain.init: {exc}") from None
    source = source.encoder if isinstance(source, Classifier | NormalBank) else source
    try:
        model.encoder.load_state_dict(source.state_dict())
    except RuntimeError:
        raise PretrainError(f"pretrain.init: {ref} does not have the shape of pretrain.encoder (or vit)") from None
    if isinstance(model, MomentumPair):
        model.sync_target()


def learning_rate(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak``, then a half cosine to zero (SimCLR, MoCo v3, DINO, MAE all use it)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def fingerprint(cfg: PretrainConfig, data_digest: str) -> str:
    """What names a run: the training settings and the data's digest. Method options and ViT sizes count as
    the config gave them (typed since, they were free-form then), so runs finished before keep their names."""
    training = cfg.model_dump(mode="json", include=set(_TRAINING_KEYS) - {"vit", "options"})
    training["vit"] = cfg.vit.model_dump(mode="json", exclude_unset=True)
    training["options"] = cfg.options.model_dump(mode="json", exclude_unset=True)
    return hashlib.sha256(json.dumps([training, data_digest], sort_keys=True).encode()).hexdigest()[:16]
