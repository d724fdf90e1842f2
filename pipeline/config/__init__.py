"""Typed configuration: pydantic models loaded from YAML, overridden by CLI flags.

``configs/default.yaml`` documents every key and must equal these defaults (a test checks both ways).
Unknown keys are errors, so a typo in a YAML file fails loudly instead of being ignored. The ingest and
pretrain sections, the largest, have modules of their own beside this one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from pipeline.config.base import BudgetSpec, Device, Name, Strict, ViewConfig, Views
from pipeline.config.ingest import DicomwebAuthConfig, DicomwebConfig, IngestConfig
from pipeline.config.pretrain import PretrainConfig
from pipeline.config.review import ReaderConfig, ReviewConfig
from pipeline.errors import ConfigError

__all__ = [
    "Config",
    "ConfigError",
    "DaskConfig",
    "DicomwebAuthConfig",
    "DicomwebConfig",
    "FinetuneConfig",
    "IngestConfig",
    "ListenConfig",
    "PretrainConfig",
    "PublishConfig",
    "ReaderConfig",
    "ReviewConfig",
    "SemiConfig",
    "TrackingConfig",
    "flat_params",
    "load_config",
]


class TrackingConfig(Strict):
    uri: str | None = None
    experiment: str = "medssl"
    enabled: bool = True


class DaskConfig(Strict):
    workers: int | None = Field(default=None, ge=1)
    scheduler: str | None = None
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str = "auto"


FinetuneMode = Literal["linear", "full", "oneclass", "semi"]


class SemiConfig(Strict):
    """``semi`` mode: the budget's labels plus the manifest's unlabelled scans (pipeline/finetune/semi.py)."""

    method: Literal["fixmatch", "meanteacher"] = "fixmatch"
    ema: float = Field(default=0.99, gt=0, lt=1)
    threshold: float = Field(default=0.95, gt=0.5, lt=1)
    weight: float = Field(default=1.0, ge=0)
    ratio: int = Field(default=4, ge=1)
    max_unlabelled: int = Field(default=20000, ge=1)
    weak: Views = Field(default_factory=lambda: ViewConfig(crop_min=0.8, intensity=0.0))
    strong: Views = Field(default_factory=lambda: ViewConfig(crop_min=0.5, intensity=1.0))


class FinetuneConfig(Strict):
    encoder: str = "scratch"
    manifest: Path | None = None
    labels: Path | None = None
    out: Path | None = None
    budget: BudgetSpec = "100%"
    mode: FinetuneMode = "linear"
    seeds: int = Field(default=3, ge=1)
    seed: int = 0
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    linear_c: float = Field(default=1.0, gt=0)
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=32, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    encoder_lr_factor: float = Field(default=0.1, gt=0)
    gentle_below: int = Field(default=100, ge=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    oneclass_metric: Literal["knn", "mahalanobis"] = "knn"
    oneclass_k: int = Field(default=5, ge=1)
    semi: SemiConfig = Field(default_factory=SemiConfig)
    exclude: list[Path] = Field(default_factory=list)
    target_specificity: float | None = Field(default=0.9, gt=0, le=1)
    target_sensitivity: float | None = Field(default=None, gt=0, le=1)
    device: Device = "auto"
    name: Name = "medssl"
    register_detector: bool = True

    @model_validator(mode="after")
    def _one_target(self) -> FinetuneConfig:
        if (self.target_specificity is None) == (self.target_sensitivity is None):
            raise ValueError("give one operating target: target_specificity or target_sensitivity (null the other)")
        return self


class CurveConfig(Strict):
    budgets: list[BudgetSpec] = Field(default_factory=list)
    scratch_mode: FinetuneMode = "full"
    out: Path | None = None


class EvaluateConfig(Strict):
    model: str | None = None
    labels: Path | None = None
    manifest: Path | None = None
    out: Path | None = None
    ingested: Path | None = None
    bootstrap: int = Field(default=1000, ge=0)
    seed: int = 0


class PromoteConfig(Strict):
    name: Name = "medssl-detector"
    # The version to gate; None: the one @challenger names when promote runs (a schedule pins its own).
    challenger: str | None = Field(default=None, pattern=r"^[1-9][0-9]*$")
    labels: Path | None = None
    out: Path | None = None
    margin: float = Field(default=0.0, ge=0)
    bootstrap: int = Field(default=1000, ge=100)
    seed: int = 0
    shift: Path | None = None
    max_shift: float = Field(default=0.75, ge=0.5, le=1)


class SuggestConfig(Strict):
    encoder: str = "scratch"
    manifest: Path | None = None
    labels: Path | None = None
    detector: str | None = None
    n: int = Field(default=20, ge=1)
    out: Path | None = None


class AdaptConfig(Strict):
    model: str | None = None
    target: str | None = None
    method: Literal["adabn", "tent", "ssl"] = "adabn"
    out: Path | None = None
    name: Name = "medssl"
    register_model: bool = True
    batch_size: int = Field(default=64, ge=2)
    tent_lr: float = Field(default=1e-3, gt=0)
    tent_epochs: int = Field(default=1, ge=1)
    seed: int = 0
    device: Device = "auto"


class ShiftConfig(Strict):
    reference: str | None = None
    target: str | None = None
    encoder: str = "scratch"
    out: Path | None = None
    permutations: int = Field(default=1000, ge=10)
    alpha: float = Field(default=0.01, gt=0, lt=1)
    max_scans: int = Field(default=1000, ge=4)
    seed: int = 0
    device: Device = "auto"


class ScoreConfig(Strict):
    model: str = "models:/medssl-detector@champion"
    manifest: Path | None = None
    out: Path | None = None
    threshold: float | None = None
    device: Device = "auto"


class PublishConfig(Strict):
    """``medssl publish``: the results table's rows as DICOM SRs, stored into the PACS (pipeline/publish)."""

    scores: Path | None = None
    manifest: Path | None = None
    url: str | None = None
    series_number: int = Field(default=9901, ge=0)


class ScheduleConfig(Strict):
    root: Path | None = None
    incoming: Path | None = None


# A DICOM AE title (PS3.5 6.2): 1-16 characters of printable ASCII but the backslash, no leading or trailing
# space (pynetdicom strips them, so "MEDSSL " and "MEDSSL" would be one title written two ways).
AETitle = Annotated[str, Field(pattern=r"^[!-\[\]-~]([ -\[\]-~]{0,14}[!-\[\]-~])?$")]


class ListenConfig(Strict):
    """``medssl listen``: the DICOM C-STORE receiver that files studies into ``schedule.incoming``."""

    ae_title: AETitle = "MEDSSL"
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=1, le=65535)
    allowed_aes: list[AETitle] = Field(default_factory=list)


class Config(Strict):
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    dask: DaskConfig = Field(default_factory=DaskConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    curve: CurveConfig = Field(default_factory=CurveConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    suggest: SuggestConfig = Field(default_factory=SuggestConfig)
    shift: ShiftConfig = Field(default_factory=ShiftConfig)
    adapt: AdaptConfig = Field(default_factory=AdaptConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    listen: ListenConfig = Field(default_factory=ListenConfig)
    review: ReviewConfig = Field(default_factory=ReviewConfig)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file, then ``overrides`` (dotted keys; ``None`` values mean 'not given')."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        tree = loaded
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(tree, key, value)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"invalid config at '{where}': {first['msg']}") from exc


def flat_params(config: Config) -> dict[str, str]:
    """The resolved config as flat ``section.key -> str`` pairs, for MLflow params (secrets masked; readers
    counted, never named: a reader's name is a person's)."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if prefix == "review.readers":
            out[prefix] = f"{len(node)} reader(s)"
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = str(node)

    walk("", config.model_dump(mode="json"))
    return out
