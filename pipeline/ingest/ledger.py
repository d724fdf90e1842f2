"""The DICOMweb ledger: which studies a staging folder already holds, so a study is never fetched twice and a
killed pull resumes with what is missing."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text
from pipeline.errors import DicomwebError
from pipeline.pseudonym import pseudonym

log = logging.getLogger(__name__)
LEDGER = ".ledger.json"
LEDGER_FLUSH_S = 1.0  # at most one ledger rewrite a second; a study a kill leaves out of it is adopted next run


class Ledger:
    """The studies already retrieved into a staging folder: study key -> instance count and time.

    It carries a fingerprint of the pseudonym key: study keys made with another key would not match, and every
    study would be fetched a second time under another name, so a key mismatch is an error instead.
    """

    def __init__(self, staging: Path, key: bytes) -> None:
        self.path = staging / LEDGER
        self.fingerprint = pseudonym(key, "medssl-dicomweb-ledger")
        self.studies: dict[str, dict[str, Any]] = {}
        self.dirty = False
        self.written = time.monotonic()
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                found = data["key"]
                self.studies = dict(data["studies"])
            except (ValueError, KeyError, TypeError):
                # Written atomically, so only a hand edit gets here; complete study folders are adopted again.
                log.warning("ledger %s is unreadable; complete study folders will be re-adopted", self.path)
                return
            if found != self.fingerprint:
                raise DicomwebError(
                    f"staging folder {staging} was filled with another pseudonym key: set the same "
                    "ingest.pseudonym_key, or use a new ingest.dicomweb.staging"
                )

    def get(self, study: str) -> dict[str, Any] | None:
        return self.studies.get(study)

    def add(self, study: str, instances: int) -> None:
        self.studies[study] = {"instances": instances, "fetched": datetime.now(UTC).isoformat(timespec="seconds")}
        self.dirty = True
        if time.monotonic() - self.written >= LEDGER_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Write the ledger atomically (temp file + rename): a kill leaves the old one or the new one."""
        if self.dirty:
            write_text(self.path, json.dumps({"key": self.fingerprint, "studies": self.studies}, indent=1) + "\n")
            self.dirty = False
            self.written = time.monotonic()
