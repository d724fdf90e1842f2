"""The ``review`` section: the radiologist's page over an ingest output (``medssl review``).

Reader tokens are secrets: they are ``SecretStr`` so a dump or a log shows stars, and the server keeps only
their hashes. ``$MEDSSL_REVIEW_TOKENS`` adds readers without writing a token into a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError

from pipeline.config.base import Name, Strict
from pipeline.errors import ConfigError

TOKENS_ENV = "MEDSSL_REVIEW_TOKENS"
Role = Literal["reader", "adjudicator"]


class ReaderConfig(Strict):
    name: Name
    role: Role = "reader"
    token: SecretStr = Field(min_length=16)


class ReviewConfig(Strict):
    manifest: Path | None = None
    suggested: Path | None = None
    scores: Path | None = None
    database: SecretStr | None = None  # a URL may carry a password: logged as stars
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    readers: list[ReaderConfig] = Field(default_factory=list)
    session_hours: float = Field(default=12.0, gt=0)
    cache_scans: int = Field(default=8, ge=1)
    unpacked: Path | None = None
    unpacked_gb: float = Field(default=20.0, ge=0)
    out: Path | None = None
    feed: bool = False

    def all_readers(self) -> list[ReaderConfig]:
        """The configured readers, then those of ``$MEDSSL_REVIEW_TOKENS`` (``name:role:token`` entries
        separated by commas); a name given twice keeps its first entry."""
        found = {r.name: r for r in self.readers}
        entries = [e.strip() for e in os.environ.get(TOKENS_ENV, "").split(",") if e.strip()]
        for n, entry in enumerate(entries, start=1):
            name, role, token = [*entry.split(":", 2), "", ""][:3]
            try:
                reader = ReaderConfig.model_validate({"name": name, "role": role, "token": token})
            except ValidationError as exc:  # the message names the field, never the token's value
                field = ".".join(str(p) for p in exc.errors()[0]["loc"])
                raise ConfigError(f"${TOKENS_ENV}: entry {n} (name:role:token) has a bad {field}") from None
            found.setdefault(name, reader)
        return list(found.values())
