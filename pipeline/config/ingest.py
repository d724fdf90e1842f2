"""The ingest section: where the scans come from, how they are checked and stacked, and the PACS to pull from."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from pipeline.config.base import Strict

Correction = Literal["reject", "raw", "resample"]
HeaderBackendName = Literal["auto", "dicomsdl", "pydicom"]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class DicomwebAuthConfig(Strict):
    """How to log in to the DICOMweb server. The config names where the secrets are (environment variables,
    a file), never the secrets themselves: the resolved config is logged with every MLflow run."""

    method: Literal["none", "basic", "bearer"] = "none"
    user_env: EnvName = "MEDSSL_DICOMWEB_USER"
    password_env: EnvName = "MEDSSL_DICOMWEB_PASSWORD"
    token_env: EnvName = "MEDSSL_DICOMWEB_TOKEN"
    file: Path | None = None


class DicomwebConfig(Strict):
    """A DICOMweb server (PACS) to pull studies from before ingesting; ``url`` None means no pull."""

    url: str | None = None
    since: date | None = None
    until: date | None = None
    staging: Path | None = None
    timeout: float = Field(default=60.0, gt=0)
    auth: DicomwebAuthConfig = Field(default_factory=DicomwebAuthConfig)
    lookback_days: int = Field(default=3, ge=0)
    ledgers: list[Path] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ordered(self) -> DicomwebConfig:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(f"since ({self.since}) is after until ({self.until})")
        return self


class IngestConfig(Strict):
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
    header_backend: HeaderBackendName = "auto"  # auto: dicomsdl when importable, else pydicom
    image_extensions: list[str] = Field(default_factory=lambda: [".png", ".jpg", ".jpeg"])
    dicomweb: DicomwebConfig = Field(default_factory=DicomwebConfig)

    def secret(self) -> str | None:
        """The configured pseudonym key in clear, for the code that keys identifiers with it."""
        return self.pseudonym_key.get_secret_value() if self.pseudonym_key else None
