"""Typed configuration: pydantic models loaded from YAML, overridden by CLI flags.

``configs/default.yaml`` documents every key and must equal these defaults (a test checks both ways).
Unknown keys are errors, so a typo in a YAML file fails loudly instead of being ignored.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from pipeline.data.budget import Budget
from pipeline.errors import ConfigError

# auto: CUDA when visible, else the CPU (pipeline.device resolves it, one GPU per torchrun rank).
Device = Literal["auto", "cpu", "cuda"]
# A label budget: Nshot or P% (0 < P <= 100), parsed by the one ``Budget.parse``.
BudgetSpec = Annotated[str, AfterValidator(lambda spec: Budget.parse(spec) and spec)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


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


class SimCLROptions(_Strict):
    """Keyword arguments of ``models.simclr.SimCLR`` (the defaults are the class's)."""

    proj_hidden: int = Field(default=512, ge=1)
    proj_dim: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.1, gt=0)


class MoCoOptions(_Strict):
    """Keyword arguments of ``models.moco.MoCo``."""

    proj_hidden: int = Field(default=512, ge=1)
    proj_dim: int = Field(default=128, ge=1)
    queue_size: int = Field(default=4096, ge=1)
    temperature: float = Field(default=0.2, gt=0)
    momentum: float = Field(default=0.99, ge=0, le=1)


class DINOOptions(_Strict):
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


class MAEOptions(_Strict):
    """Keyword arguments of ``models.mae.MAE`` besides its ViT sizes (``pretrain.vit``)."""

    masking_ratio: float = Field(default=0.75, gt=0, lt=1)
    norm_pix_loss: bool = True


class MethodOptions(_Strict):
    simclr: SimCLROptions = Field(default_factory=SimCLROptions)
    moco: MoCoOptions = Field(default_factory=MoCoOptions)
    dino: DINOOptions = Field(default_factory=DINOOptions)
    mae: MAEOptions = Field(default_factory=MAEOptions)


class ViTConfig(_Strict):
    """The MAE encoder's and decoder's sizes (``models.mae.VIT_DEFAULTS``: a ViT-S-like encoder)."""

    hidden_size: int = Field(default=384, ge=1)
    mlp_dim: int = Field(default=1536, ge=1)
    num_layers: int = Field(default=6, ge=1)
    num_heads: int = Field(default=6, ge=1)
    decoder_hidden_size: int = Field(default=192, ge=1)
    decoder_mlp_dim: int = Field(default=768, ge=1)
    decoder_num_layers: int = Field(default=2, ge=1)
    decoder_num_heads: int = Field(default=6, ge=1)


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
    device: Device = "auto"
    amp: bool | None = None
    cache_rate: float = Field(default=1.0, ge=0, le=1)
    cache_workers: int = Field(default=1, ge=1)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    views: ViewConfig = Field(default_factory=ViewConfig)
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


FinetuneMode = Literal["linear", "full", "oneclass", "semi"]


class SemiConfig(_Strict):
    """``semi`` mode (FixMatch, Sohn et al. 2020): the budget's labels plus the manifest's unlabelled scans,
    each taught the label the detector gives its weak view when it is sure, through a strong view."""

    threshold: float = Field(default=0.95, gt=0.5, lt=1)
    weight: float = Field(default=1.0, ge=0)
    ratio: int = Field(default=4, ge=1)
    max_unlabelled: int = Field(default=20000, ge=1)
    weak: ViewConfig = Field(default_factory=lambda: ViewConfig(crop_min=0.8, intensity=0.0))
    strong: ViewConfig = Field(default_factory=lambda: ViewConfig(crop_min=0.5, intensity=1.0))


class FinetuneConfig(_Strict):
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


class CurveConfig(_Strict):
    budgets: list[BudgetSpec] = Field(default_factory=list)
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
    name: Name = "medssl"
    register_model: bool = True
    batch_size: int = Field(default=64, ge=2)
    tent_lr: float = Field(default=1e-3, gt=0)
    tent_epochs: int = Field(default=1, ge=1)
    seed: int = 0
    device: Device = "auto"


class ShiftConfig(_Strict):
    reference: str | None = None
    target: str | None = None
    encoder: str = "scratch"
    out: Path | None = None
    permutations: int = Field(default=1000, ge=10)
    alpha: float = Field(default=0.01, gt=0, lt=1)
    max_scans: int = Field(default=1000, ge=4)
    seed: int = 0
    device: Device = "auto"


class ScoreConfig(_Strict):
    model: str = "models:/medssl-detector@champion"
    manifest: Path | None = None
    out: Path | None = None
    threshold: float | None = None
    device: Device = "auto"


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
