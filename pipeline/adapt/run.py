"""The adapt stage: fit a model to a new site from that site's unlabeled scans alone.

Three ways, each ending in a registered model that records what it was adapted to (``adapted_to``: the
digest of the target's scans, the same digest ``medssl shift`` reports, which the promotion gate checks):

- ``adabn`` (Li et al. 2016): re-estimate every BatchNorm layer's running statistics on the target scans.
  Nothing learned changes; the network sees target features normalised as source features were.
- ``tent`` (Wang et al. 2021): also move the BatchNorm scales and shifts to make the detector's predictions
  on the target confident (minimum entropy), then re-estimate the statistics as AdaBN does, so the saved
  model runs in eval mode like any other.
- ``ssl``: continue self-supervised pretraining on the target scans from the source encoder's weights (any
  method of the pretrain stage); fine-tune the result on the source labels as usual, and the detector
  inherits the adaptation.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from models.batchnorm import batchnorms, estimate_batchnorm
from models.detectors import Classifier
from pipeline.adapt.shift import parse_side, read_side
from pipeline.atomic import atomic_path
from pipeline.config import Config
from pipeline.data.items import digest
from pipeline.device import resolve
from pipeline.errors import AdaptError
from pipeline.inference import input_spec
from pipeline.pretrain import run_pretrain
from pipeline.registry.store import CHALLENGER, detector_name, load_model, log_detector, pin_model
from pipeline.report import report_table
from pipeline.tracking import log_metrics, stage_run


@dataclass(frozen=True)
class AdaptResult:
    out: Path
    method: str
    source: str
    target: str
    target_digest: str
    scans: int
    model: Path
    model_uri: str | None


def _norms(model: nn.Module) -> list[_BatchNorm]:
    norms = batchnorms(model)
    if not norms:
        raise AdaptError("the model has no BatchNorm layer: there are no statistics to adapt")
    return norms


def adabn(model: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated over ``images``."""
    _norms(model)
    return estimate_batchnorm(copy.deepcopy(model), images, batch_size, device)


def tent(
    model: nn.Module, images: torch.Tensor, batch_size: int, lr: float, epochs: int, seed: int, device: torch.device
) -> nn.Module:
    """A copy of the detector ``model`` whose BatchNorm scales and shifts minimise the entropy of its
    predictions on ``images`` (batch statistics during the passes, as TENT), then AdaBN statistics."""
    model = copy.deepcopy(model).to(device).eval()
    norms = _norms(model)
    model.requires_grad_(False)
    affine = [p for m in norms for p in (m.weight, m.bias) if p is not None]
    for p in affine:
        p.requires_grad_(True)
    for m in norms:
        m.train()
    optimiser = torch.optim.Adam(affine, lr=lr)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(images), generator=order).split(batch_size):
            if len(batch) < 2:
                continue
            logits = model(images[batch].to(device))
            p = torch.sigmoid(logits)
            entropy = -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).mean()
            optimiser.zero_grad(set_to_none=True)
            entropy.backward()
            optimiser.step()
    model.requires_grad_(True)
    return estimate_batchnorm(model, images, batch_size, device)  # already a copy


def run_adapt(config: Config, console: Console) -> AdaptResult:
    """Adapt ``adapt.model`` to ``adapt.target`` by ``adapt.method``; save, log and register the result."""
    cfg = config.adapt
    if cfg.model is None or cfg.target is None:
        raise AdaptError("adapt needs --model and --target (MANIFEST[:SITE])")
    if cfg.method == "ssl":
        return _continue_pretraining(config, console)
    source = pin_model(cfg.model, config.tracking)[2]  # the lineage names the version, not a moving alias
    detector, tags = load_model(source, config.tracking)
    if not isinstance(detector, Classifier):
        raise AdaptError(
            f"{cfg.method} adapts a linear or full detector (medssl finetune), not {type(detector).__name__}"
        )
    spec = input_spec(detector, tags, None)
    target = read_side(cfg.target, spec.spatial_dims, config.pretrain.slices_per_volume)
    if len(target.rows) < 2:
        raise AdaptError(f"{target.name}: {cfg.method} needs at least 2 target scans, found {len(target.rows)}")
    images = spec.load(target.rows)
    device = resolve(cfg.device).device
    torch.manual_seed(cfg.seed)
    if cfg.method == "adabn":
        adapted = adabn(detector, images, cfg.batch_size, device)
    else:
        adapted = tent(detector, images, cfg.batch_size, cfg.tent_lr, cfg.tent_epochs, cfg.seed, device)
    target_digest = digest(target.rows)
    adapted.adapted_to = target_digest
    out = cfg.out or target.manifest.parent / "adapt" / cfg.method
    result = AdaptResult(
        out, cfg.method, cfg.model, target.name, target_digest, len(target.rows), out / "detector.pt", None
    )
    with atomic_path(result.model) as tmp:
        torch.save(adapted, tmp)
    registry_tags = {
        "adaptation": cfg.method,
        "adapted_from": source,
        "adapted_to": target_digest,
        "spatial_dims": str(spec.spatial_dims),
        "input_size": str(spec.size),
    }
    with stage_run(config, "adapt", tags={"medssl.adaptation": cfg.method, "medssl.target_digest": target_digest}):
        log_metrics({"target_scans": float(result.scans)})
        uri = log_detector(result.model, detector_name(cfg.name), cfg.register_model, registry_tags, alias=CHALLENGER)
    return AdaptResult(**{**asdict(result), "model_uri": uri})


def _continue_pretraining(config: Config, console: Console) -> AdaptResult:
    """``ssl``: the pretrain stage on the target manifest, starting from the source encoder's weights."""
    cfg = config.adapt
    manifest, site = parse_side(cfg.target)
    if site is not None:
        raise AdaptError("continued pretraining takes a whole manifest: ingest the target site on its own")
    out = cfg.out or manifest.parent / "adapt" / "ssl"
    pretrain = config.pretrain.model_copy(
        update={
            "manifest": manifest,
            "init": cfg.model,
            "out": out,
            "name": cfg.name,
            "register_encoder": cfg.register_model,
        }
    )
    result = run_pretrain(config.model_copy(update={"pretrain": pretrain}), console)
    return AdaptResult(
        out, "ssl", cfg.model, str(manifest), result.dataset_digest, result.items, result.encoder, result.model_uri
    )


def summary_table(result: AdaptResult) -> Table:
    rows = [
        ("method", result.method),
        ("adapted from", result.source),
        ("target", f"{result.target} ({result.scans} scans)"),
        ("target digest", result.target_digest),
        ("model", str(result.model)),
        ("registered", result.model_uri or "-"),
    ]
    return report_table("adapt", rows)
