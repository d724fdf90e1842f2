"""Typed configuration: pydantic models loaded from YAML, overridden by CLI flags.

``configs/default.yaml`` documents every key and must equal these defaults (a test checks both ways).
Unknown keys are errors, so a typo in a YAML file fails loudly instead of being ignored.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrackingConfig(_Strict):
    uri: str | None = None
    experiment: str = "medssl"
    enabled: bool = True


class DaskConfig(_Strict):
    workers: int | None = Field(default=None, ge=1)
    scheduler: str | None = None
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str = "auto"


Correction = Literal["reject", "raw", "resample"]


class DicomwebConfig(_Strict):
    """A DICOMweb server (PACS) to pull studies from before ingesting; ``url`` None means no pull."""

    url: str | None = None
    since: date | None = None
    until: date | None = None
    staging: Path | None = None
    timeout: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> DicomwebConfig:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(f"since ({self.since}) is after until ({self.until})")
        return self


class IngestConfig(_Strict):
    sources: list[Path] = Field(default_factory=list)
    out: Path | None = None
    labels: list[Path] = Field(default_factory=list)
    compress: bool = True
    site: str | None = None
    pseudonym_key: SecretStr | None = None
    tilt: Correction = "reject"
    nonuniform_spacing: Correction = "reject"
    reject_localizers: bool = True
    spacing_tolerance: float = Field(default=0.05, gt=0)
    orientation_tolerance: float = Field(default=1e-3, gt=0)
    tilt_tolerance_deg: float = Field(default=0.1, gt=0)
    files_per_task: int = Field(default=128, ge=1)
    image_extensions: list[str] = Field(default_factory=lambda: [".png", ".jpg", ".jpeg"])
    dicomweb: DicomwebConfig = Field(default_factory=DicomwebConfig)

    def secret(self) -> str | None:
        """The configured pseudonym key in clear, for the code that keys identifiers with it."""
        return self.pseudonym_key.get_secret_value() if self.pseudonym_key else None


Method = Literal["simclr", "moco", "dino", "mae"]


class EncoderConfig(_Strict):
    widths: list[int] = Field(default_factory=lambda: [64, 128, 256, 512], min_length=1)
    layers: list[int] = Field(default_factory=lambda: [2, 2, 2, 2], min_length=1)


class ViewConfig(_Strict):
    crop_min: float = Field(default=0.5, gt=0, le=1)
    flip_axes: list[int] = Field(default_factory=lambda: [0])
    intensity: float = Field(default=1.0, ge=0, le=1)


class MonitorConfig(_Strict):
    bank: Path | None = None
    query: Path | None = None
    query_fraction: float = Field(default=0.3, gt=0, lt=1)
    every: int = Field(default=5, ge=0)
    k: int = Field(default=20, ge=1)


class PretrainConfig(_Strict):
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
    device: str = "auto"
    amp: bool | None = None
    cache_rate: float = Field(default=1.0, ge=0, le=1)
    cache_workers: int = Field(default=1, ge=1)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    views: ViewConfig = Field(default_factory=ViewConfig)
    patch_size: int = Field(default=8, ge=1)
    vit: dict[str, int] = Field(default_factory=dict)
    options: dict[Method, dict[str, float | int | bool]] = Field(default_factory=dict)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    name: str = Field(default="medssl", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    register_encoder: bool = True
    init: str | None = None


FinetuneMode = Literal["linear", "full", "oneclass"]


class FinetuneConfig(_Strict):
    encoder: str = "scratch"
    manifest: Path | None = None
    labels: Path | None = None
    out: Path | None = None
    budget: str = Field(default="100%", pattern=r"^(\d+(\.\d+)?%|\d+shot)$")
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
    device: str = "auto"
    name: str = Field(default="medssl", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    register_detector: bool = True


class CurveConfig(_Strict):
    budgets: list[str] = Field(default_factory=list)
    scratch_mode: FinetuneMode = "full"
    out: Path | None = None


class EvaluateConfig(_Strict):
    model: str | None = None
    labels: Path | None = None
    out: Path | None = None
    ingested: Path | None = None
    bootstrap: int = Field(default=1000, ge=0)
    seed: int = 0


class PromoteConfig(_Strict):
    name: str = Field(default="medssl-detector", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # The version to gate; None: the one @challenger names when promote runs (a schedule pins its own).
    challenger: str | None = Field(default=None, pattern=r"^[1-9][0-9]*$")
    labels: Path | None = None
    out: Path | None = None
    margin: float = Field(default=0.01, ge=0)
    shift: Path | None = None
    max_shift: float = Field(default=0.75, ge=0.5, le=1)


class SuggestConfig(_Strict):
    encoder: str = "scratch"
    manifest: Path | None = None
    labels: Path | None = None
    detector: str | None = None
    n: int = Field(default=20, ge=1)
    out: Path | None = None


class AdaptConfig(_Strict):
    model: str | None = None
    target: str | None = None
    method: Literal["adabn", "tent", "ssl"] = "adabn"
    out: Path | None = None
    name: str = Field(default="medssl", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    register_model: bool = True
    batch_size: int = Field(default=64, ge=2)
    tent_lr: float = Field(default=1e-3, gt=0)
    tent_epochs: int = Field(default=1, ge=1)
    seed: int = 0
    device: str = "auto"


class ShiftConfig(_Strict):
    reference: str | None = None
    target: str | None = None
    encoder: str = "scratch"
    out: Path | None = None
    permutations: int = Field(default=1000, ge=10)
    alpha: float = Field(default=0.01, gt=0, lt=1)
    max_scans: int = Field(default=1000, ge=4)
    seed: int = 0
    device: str = "auto"


class ScoreConfig(_Strict):
    model: str = "models:/medssl-detector@champion"
    manifest: Path | None = None
    out: Path | None = None
    threshold: float = 0.0
    device: str = "auto"


class ScheduleConfig(_Strict):
    root: Path | None = None
    incoming: Path | None = None


class Config(_Strict):
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
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)


class ConfigError(ValueError):
    """A config file or override that does not validate; the message names the key."""


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
    """The resolved config as flat ``section.key -> str`` pairs, for MLflow params (secrets masked)."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = str(node)

    walk("", config.model_dump(mode="json"))
    return out
