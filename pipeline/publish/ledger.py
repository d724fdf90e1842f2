"""The publish ledger: which results the PACS already holds, so a re-run sends nothing twice.

A result is one (series_key, model, version): a new champion version has results of its own, and each gets
its own SR. The ledger sits beside the results table (``scores.published.json`` for ``scores.csv``) and holds
keyed series names and model versions only, never a UID. It is rewritten atomically after every stored SR, so a
kill loses at most the entry of the SR in flight; that SR is sent again next run with the same UIDs
(``report.sr_uids``), which the PACS takes as the same instance, not a second one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from pipeline.atomic import write_text

log = logging.getLogger(__name__)


def ledger_path(scores: Path) -> Path:
    return scores.with_name(f"{scores.stem}.published.json")


def entry(series_key: str, model: str, version: str) -> str:
    return f"{series_key}|{model}|{version}"


class PublishLedger:
    """Results stored into the PACS: entry -> when."""

    def __init__(self, scores: Path) -> None:
        self.path = ledger_path(scores)
        self.published: dict[str, str] = {}
        if self.path.exists():
            try:
                self.published = dict(json.loads(self.path.read_text(encoding="utf-8"))["published"])
            except (ValueError, KeyError, TypeError):
                # Written atomically, so only a hand edit gets here; re-sent SRs keep their UIDs (no duplicates).
                log.warning("publish ledger %s is unreadable; its results will be sent again", self.path)

    def __contains__(self, key: str) -> bool:
        return key in self.published

    def add(self, key: str) -> None:
        self.published[key] = datetime.now(UTC).isoformat(timespec="seconds")
        write_text(self.path, json.dumps({"published": self.published}, indent=1) + "\n")
