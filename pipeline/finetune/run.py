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
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from torch import nn

from pipeline.atomic import atomic_path, write_text
from pipeline.config import Config, FinetuneConfig
from pipeline.data.augment import RandViewd, views
from pipeline.data.budget import Budget, draw
from pipeline.data.items import digest, scans
from pipeline.data.labelled import excluded_scans, labelled_items, validation_split
from pipeline.device import resolve
from pipeline.errors import FinetuneError
from pipeline.finetune.fit import fit_full, fit_linear, fit_oneclass
from pipeline.finetune.semi import fit_semi, unlabelled_items
from pipeline.inference import InputSpec, adapted_to, load_encoder, operating_point, per_scan, scan_auroc, score
from pipeline.registry.store import CHALLENGER, detector_name, log_detector
from pipeline.report import report_table
from pipeline.tracking import log_artifact, log_metrics, log_table_input, stage_run


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
    unlabelled_scans: int
    val_auroc: list[float]
    labels_used: list[int]
    operating_point: dict[str, float] | None = None  # the first repeat's threshold, specificity, sensitivity
    scores: Path | None = None  # validation-scores.csv: each repeat's score of each validation scan

    @property
    def mean(self) -> float:
        return float(np.mean(self.val_auroc))

    @property
    def sd(self) -> float:
        return float(np.std(self.val_auroc, ddof=1)) if len(self.val_auroc) > 1 else 0.0


def fit_detector(
    encoder: nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    cfg: FinetuneConfig,
    spec: InputSpec,
    seed: int,
    device: torch.device,
    unlabelled: torch.Tensor | None = None,
    checkpoint: tuple[Path, str] | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """The detector of one repeat, and what its fit reports (the semi mode's confident share); the semi
    mode checkpoints each epoch to ``checkpoint`` (path, fingerprint of this fit)."""
    if cfg.mode == "oneclass":
        return fit_oneclass(encoder, images, labels, cfg, device), {}
    with torch.no_grad():  # in eval mode: a probe batch must not move the pretrained BatchNorm statistics
        dim = int(encoder.eval()(torch.zeros(1, 1, *(spec.size,) * spec.spatial_dims)).shape[1])
    model = fit_linear(encoder, dim, images, labels, cfg.linear_c, seed, device)
    pretrained = cfg.encoder != "scratch"
    if cfg.mode == "full":
        augment = views(spec.spatial_dims, spec.size, "mae", crop_min=0.8)  # crops and flips, no intensity change
        return fit_full(model, images, labels, cfg, augment, seed, device, pretrained), {}
    if cfg.mode == "semi" and unlabelled is not None:
        recipes = tuple(
            RandViewd(spec.spatial_dims, spec.size, v.crop_min, v.flip_axes, v.intensity)
            for v in (cfg.semi.weak, cfg.semi.strong)
        )
        path, fingerprint = checkpoint or (None, "")
        model, share = fit_semi(
            model, images, labels, unlabelled, cfg, recipes, seed, device, pretrained, path, fingerprint
        )
        return model, {"confident_share": share}
    return model, {}


def run_finetune(config: Config, console: Console, tags: dict[str, str] | None = None) -> FinetuneResult:
    """Fit ``seeds`` detectors on a budget of labels, score the validation scans, register the first. The
    label CSV is the run's ``labels`` dataset input; ``tags`` say more of where it came from (a pipeline run
    names the review export that wrote it)."""
    cfg = config.finetune
    if cfg.manifest is None:
        raise FinetuneError("no manifest given: pass --manifest or set finetune.manifest")
    budget = Budget.parse(cfg.budget)
    device = resolve(cfg.device).device
    encoder, spec = load_encoder(cfg.encoder, config.pretrain, config.tracking, cfg.seed)
    classes = frozenset({0}) if cfg.mode == "oneclass" else frozenset({0, 1})
    # The scans evaluate and promote judge on: neither trained on, even labelled, nor semi's unlabelled ones.
    excluded = excluded_scans(cfg.manifest, cfg.exclude, config.ingest.secret(), console) if cfg.exclude else set()
    labelled = labelled_items(
        cfg.manifest,
        cfg.labels,
        config.ingest.secret(),
        spec.spatial_dims,
        config.pretrain.slices_per_volume,
        console,
        classes,
        excluded,
    )
    if {it["label"] for it in labelled} == {0}:  # one-class from normal scans alone: nothing to validate on
        train, val = labelled, []
        console.print(
            "[yellow]finetune: normal labels only: fitted on all of them, not validated here (no abnormal scan); "
            "check the detector with medssl evaluate on a labelled set[/]"
        )
    else:
        train, val = validation_split(labelled, cfg.val_fraction, cfg.seed)
    val_images = spec.load(val) if val else None
    pool = {id(it): i for i, it in enumerate(train)}
    train_images = spec.load(train)
    unlabelled = (
        unlabelled_items(cfg.manifest, config, spec.spatial_dims, val, excluded, console) if cfg.mode == "semi" else []
    )
    unlabelled_images = spec.load(unlabelled) if unlabelled else None
    if cfg.mode == "semi" and not unlabelled:
        raise FinetuneError(f"{cfg.manifest}: semi mode found no unlabelled scan outside the validation part")
    out = cfg.out or cfg.manifest.parent / "finetune"
    tags = {
        "medssl.mode": cfg.mode,
        "medssl.budget": cfg.budget,
        "medssl.dataset_digest": digest(labelled),
        **(tags or {}),
    }
    aurocs, used, first, tables = [], [], None, []

    with stage_run(config, "finetune", tags=tags) as run, Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"finetune {cfg.mode} {cfg.budget}", total=cfg.seeds)
        if cfg.labels is not None:
            log_table_input(pd.read_csv(cfg.labels), cfg.labels, "labels", "training")
        for repeat in range(cfg.seeds):
            seed = cfg.seed + repeat
            chosen = draw(train, budget, seed, tuple(sorted(classes)))
            index = torch.as_tensor([pool[id(it)] for it in chosen])
            labels = np.array([it["label"] for it in chosen])
            start = (
                load_encoder(cfg.encoder, config.pretrain, config.tracking, seed)[0]
                if cfg.encoder == "scratch"
                else copy.deepcopy(encoder)
            )
            resume = (out / "checkpoints" / f"semi-{repeat}.pt", _fingerprint(config, chosen, seed))
            detector, report = fit_detector(
                start, train_images[index], labels, cfg, spec, seed, device, unlabelled_images, resume
            )
            scores = score(detector, val_images, device) if val else None
            aurocs.append(scan_auroc(val, scores) if val else float("nan"))
            if val:
                tables.append(per_scan(val, scores).assign(repeat=repeat))
            used.append(len(scans(chosen)))
            log_metrics({"labels_used": used[-1], **report} | ({"val_auroc": aurocs[-1]} if val else {}), step=repeat)
            if first is None:
                first = detector
                if val:  # the registered detector's operating point, on the scans it was validated on
                    table = tables[-1]
                    point = operating_point(
                        table.label.astype(int), table.score, cfg.target_specificity, cfg.target_sensitivity
                    )
                    first.operating_point = point
            bar.advance(task)
        result = FinetuneResult(
            out=out,
            detector=out / "detector.pt",
            model_uri=None,
            run_id=run.info.run_id if run is not None else None,
            mode=cfg.mode,
            budget=cfg.budget,
            encoder=cfg.encoder,
            labelled=len(scans(labelled)),
            validation_scans=len(scans(val)),
            unlabelled_scans=len(scans(unlabelled)),
            val_auroc=aurocs,
            labels_used=used,
            operating_point=getattr(first, "operating_point", None),
        )
        if val:
            log_metrics({"val_auroc_mean": result.mean, "val_auroc_sd": result.sd})
            result = replace(result, scores=out / "validation-scores.csv")
            with atomic_path(result.scores) as tmp:
                pd.concat(tables)[["repeat", "scan", "label", "score"]].to_csv(tmp, index=False)
            log_artifact(result.scores)
        published = _publish(first, result, cfg, spec)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # every repeat is in the results now
    return published


def _fingerprint(config: Config, chosen: list, seed: int) -> str:
    """What a semi checkpoint must match to be resumed: the settings, the encoder, the labels drawn."""
    settings = config.finetune.model_dump(mode="json", exclude={"out", "seeds", "register_detector", "name"})
    text = json.dumps([settings, config.pretrain.model_dump(mode="json"), sorted(scans(chosen)), seed], default=str)
    return hashlib.sha256(text.encode()).hexdigest()


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
    if result.operating_point is not None:
        tags.update({f"operating_{k}": f"{v:.6g}" for k, v in result.operating_point.items()})
    uri = log_detector(result.detector, detector_name(cfg.name), cfg.register_detector, tags, alias=CHALLENGER)
    result = replace(result, model_uri=uri)
    summary = {**asdict(result), "out": str(result.out), "detector": str(result.detector)}
    summary["scores"] = None if result.scores is None else str(result.scores)
    summary.update(val_auroc_mean=result.mean, val_auroc_sd=result.sd)
    write_text(result.out / "finetune.json", json.dumps(summary, indent=2))
    log_artifact(result.out / "finetune.json")
    return result


def _described(point: dict[str, float] | None) -> str:
    """The operating point as the summary shows it (none when the detector was not validated)."""
    if point is None:
        return "- (not validated)"
    rates = f"specificity {point['specificity']:.2f}, sensitivity {point['sensitivity']:.2f}"
    return f"score >= {point['threshold']:.4g}: {rates} (validation part)"


def summary_table(result: FinetuneResult) -> Table:
    rows = [
        ("encoder", result.encoder),
        ("labelled scans", str(result.labelled)),
        ("validation scans", str(result.validation_scans)),
        *([("unlabelled scans", str(result.unlabelled_scans))] if result.mode == "semi" else []),
        ("labels used per repeat", ", ".join(map(str, result.labels_used))),
        ("validation AUROC", ", ".join(f"{a:.3f}" for a in result.val_auroc) if result.validation_scans else "-"),
        ("mean ± sd", f"{result.mean:.3f} ± {result.sd:.3f}" if result.validation_scans else "not validated"),
        ("operating point", _described(result.operating_point)),
        ("detector", str(result.detector)),
        ("registered", result.model_uri or "-"),
    ]
    return report_table(f"finetune ({result.mode}, budget {result.budget})", rows)
