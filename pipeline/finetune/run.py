"""The finetune stage: a normal-vs-abnormal detector from an encoder (pretrained or scratch) and a budget
of labels, repeated over seeds so the spread of a few-label result is visible.

The split into training and validation scans is fixed by ``seed``; each repeat draws its own labels from
the training part and trains its own detector. The validation AUROC (per scan: slices of one volume are
averaged) of every repeat, their mean and sd go to ``finetune.json`` and MLflow. The first repeat's
detector is saved as ``detector.pt`` and registered as ``<name>-detector`` with the alias ``challenger``:
``medssl promote`` decides whether it becomes the champion.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sklearn.metrics import roc_auc_score
from torch import nn

from models.encoders import build_encoder
from pipeline.atomic import atomic_path, write_text
from pipeline.config import Config, FinetuneConfig
from pipeline.device import resolve
from pipeline.finetune.data import Budget, FinetuneDataError, draw, labelled_items, split
from pipeline.finetune.fit import fit_full, fit_linear, fit_oneclass, score
from pipeline.pretrain.rows import digest
from pipeline.pretrain.views import load_fixed, views
from pipeline.report import report_table
from pipeline.tracking import load_model, log_artifact, log_metrics, log_scorer, stage_run

ALIAS = "challenger"


@dataclass(frozen=True)
class InputSpec:
    """How to feed an encoder: what ``pretrain`` trained it on."""

    spatial_dims: int
    size: int
    volume_side: int


@dataclass(frozen=True)
class FinetuneResult:
    out: Path
    detector: Path
    model_uri: str | None
    run_id: str | None
    mode: str
    budget: str
    encoder: str
    labelled: int
    validation_scans: int
    val_auroc: list[float]
    labels_used: list[int]

    @property
    def mean(self) -> float:
        return float(np.mean(self.val_auroc))

    @property
    def sd(self) -> float:
        return float(np.std(self.val_auroc, ddof=1)) if len(self.val_auroc) > 1 else 0.0


def load_encoder(config: Config, seed: int) -> tuple[nn.Module, InputSpec]:
    """The encoder ``finetune.encoder`` names, and how to feed it (from the module, its registry tags, or
    for ``scratch`` and older encoders, the pretrain settings)."""
    ref, pre = config.finetune.encoder, config.pretrain
    fallback = InputSpec(pre.spatial_dims, pre.size, pre.volume_side)
    if ref == "scratch":
        torch.manual_seed(seed)
        return build_encoder(pre.spatial_dims, 1, pre.encoder.widths, pre.encoder.layers)[0], fallback
    try:
        module, tags = load_model(ref, config.tracking)
    except FileNotFoundError as exc:
        raise FinetuneDataError(f"encoder: {exc}; or finetune from scratch") from None
    return module, input_spec(module, tags, fallback)


def adapted_to(module: nn.Module) -> str | None:
    """The digest of the target scans a detector (or its encoder) was adapted to (medssl adapt), or None."""
    return getattr(module, "adapted_to", None) or getattr(getattr(module, "encoder", None), "adapted_to", None)


def input_spec(module: nn.Module, tags: dict[str, str], fallback: InputSpec | None) -> InputSpec:
    """What a saved encoder or detector takes: its own ``input_spec``, else its registry tags, else
    ``fallback`` (None: a ``FinetuneDataError``, since guessing would score garbage)."""
    spec = getattr(module, "input_spec", None)
    if spec:
        return InputSpec(**spec)
    volume_side = fallback.volume_side if fallback else 128
    if "input_size" in tags:
        return InputSpec(int(tags["spatial_dims"]), int(tags["input_size"]), volume_side)
    if fallback is None:
        raise FinetuneDataError("the model does not say what input it takes (no input_spec, no input_size tag)")
    return fallback


def scan_auroc(items: list[dict[str, Any]], scores: np.ndarray) -> float:
    """AUROC over scans: the scores of one scan's items (slices) are averaged first."""
    per_scan = pd.DataFrame({"scan": [it["voxels"] for it in items], "label": [it["label"] for it in items]})
    per_scan = per_scan.assign(score=scores).groupby("scan").agg(label=("label", "first"), score=("score", "mean"))
    return float(roc_auc_score(per_scan.label, per_scan.score))


def _fit(
    encoder: nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    cfg: FinetuneConfig,
    spec: InputSpec,
    seed: int,
    device: torch.device,
) -> nn.Module:
    if cfg.mode == "oneclass":
        return fit_oneclass(encoder, images, labels, cfg, device)
    with torch.no_grad():  # in eval mode: a probe batch must not move the pretrained BatchNorm statistics
        dim = int(encoder.eval()(torch.zeros(1, 1, *(spec.size,) * spec.spatial_dims)).shape[1])
    model = fit_linear(encoder, dim, images, labels, cfg.linear_c, seed, device)
    if cfg.mode == "full":
        augment = views(spec.spatial_dims, spec.size, "mae", crop_min=0.8)  # crops and flips, no intensity change
        model = fit_full(model, images, labels, cfg, augment, seed, device, pretrained=cfg.encoder != "scratch")
    return model


def run_finetune(config: Config, console: Console) -> FinetuneResult:
    """Fit ``seeds`` detectors on a budget of labels, score the validation scans, register the first."""
    cfg = config.finetune
    if cfg.manifest is None:
        raise FinetuneDataError("no manifest given: pass --manifest or set finetune.manifest")
    budget = Budget.parse(cfg.budget)
    device = resolve(cfg.device).device
    encoder, spec = load_encoder(config, cfg.seed)
    classes = frozenset({0}) if cfg.mode == "oneclass" else frozenset({0, 1})
    labelled = labelled_items(
        cfg.manifest,
        cfg.labels,
        config.ingest.secret(),
        spec.spatial_dims,
        config.pretrain.slices_per_volume,
        console,
        classes,
    )
    if {it["label"] for it in labelled} == {0}:  # one-class from normal scans alone: nothing to validate on
        train, val = labelled, []
        console.print(
            "[yellow]finetune: normal labels only: fitted on all of them, not validated here (no abnormal scan); "
            "check the detector with medssl evaluate on a labelled set[/]"
        )
    else:
        train, val = split(labelled, cfg.val_fraction, cfg.seed)
    val_images = load_fixed(val, spec.spatial_dims, spec.size, spec.volume_side) if val else None
    pool = {id(it): i for i, it in enumerate(train)}
    train_images = load_fixed(train, spec.spatial_dims, spec.size, spec.volume_side)
    out = cfg.out or cfg.manifest.parent / "finetune"
    tags = {"medssl.mode": cfg.mode, "medssl.budget": cfg.budget, "medssl.dataset_digest": digest(labelled)}
    aurocs, used, first = [], [], None

    with stage_run(config, "finetune", tags=tags) as run, Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"finetune {cfg.mode} {cfg.budget}", total=cfg.seeds)
        for repeat in range(cfg.seeds):
            seed = cfg.seed + repeat
            chosen = draw(train, budget, seed, tuple(sorted(classes)))
            index = torch.as_tensor([pool[id(it)] for it in chosen])
            labels = np.array([it["label"] for it in chosen])
            start = load_encoder(config, seed)[0] if cfg.encoder == "scratch" else copy.deepcopy(encoder)
            detector = _fit(start, train_images[index], labels, cfg, spec, seed, device)
            aurocs.append(scan_auroc(val, score(detector, val_images, device)) if val else float("nan"))
            used.append(len({it["voxels"] for it in chosen}))
            log_metrics({"labels_used": used[-1]} | ({"val_auroc": aurocs[-1]} if val else {}), step=repeat)
            if first is None:
                first = detector
            bar.advance(task)
        result = FinetuneResult(
            out=out,
            detector=out / "detector.pt",
            model_uri=None,
            run_id=run.info.run_id if run is not None else None,
            mode=cfg.mode,
            budget=cfg.budget,
            encoder=cfg.encoder,
            labelled=len({it["voxels"] for it in labelled}),
            validation_scans=len({it["voxels"] for it in val}),
            val_auroc=aurocs,
            labels_used=used,
        )
        if val:
            log_metrics({"val_auroc_mean": result.mean, "val_auroc_sd": result.sd})
        return _publish(first, result, cfg, spec)


def _publish(detector: nn.Module, result: FinetuneResult, cfg: FinetuneConfig, spec: InputSpec) -> FinetuneResult:
    """Save the first repeat's detector, log and register it as the challenger, write the summary."""
    detector = detector.cpu().eval()
    detector.input_spec = asdict(spec)
    with atomic_path(result.detector) as tmp:
        torch.save(detector, tmp)
    tags = {
        "mode": cfg.mode,
        "budget": cfg.budget,
        "encoder": cfg.encoder,
        "val_auroc": f"{result.val_auroc[0]:.4f}",
        "spatial_dims": str(spec.spatial_dims),
        "input_size": str(spec.size),
    }
    if (target := adapted_to(detector)) is not None:  # its encoder was pretrained on, or adapted to, a target
        tags["adapted_to"] = target
    uri = log_scorer(result.detector, f"{cfg.name}-detector", cfg.register_detector, tags, alias=ALIAS)
    result = replace(result, model_uri=uri)
    summary = {**asdict(result), "out": str(result.out), "detector": str(result.detector)}
    summary.update(val_auroc_mean=result.mean, val_auroc_sd=result.sd)
    write_text(result.out / "finetune.json", json.dumps(summary, indent=2))
    log_artifact(result.out / "finetune.json")
    return result


def summary_table(result: FinetuneResult) -> Table:
    rows = [
        ("encoder", result.encoder),
        ("labelled scans", str(result.labelled)),
        ("validation scans", str(result.validation_scans)),
        ("labels used per repeat", ", ".join(map(str, result.labels_used))),
        ("validation AUROC", ", ".join(f"{a:.3f}" for a in result.val_auroc) if result.validation_scans else "-"),
        ("mean ± sd", f"{result.mean:.3f} ± {result.sd:.3f}" if result.validation_scans else "not validated"),
        ("detector", str(result.detector)),
        ("registered", result.model_uri or "-"),
    ]
    return report_table(f"finetune ({result.mode}, budget {result.budget})", rows)
