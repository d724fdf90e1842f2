"""The ingest journal: every finished manifest row on disk as soon as its batch is done, so a killed run
loses none of them and the next run resumes from where it stopped."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from pipeline.atomic import write_text

log = logging.getLogger(__name__)
JOURNAL_DIR = ".journal"


class Journal:
    """Append-only record of finished rows, one atomically written JSON-lines segment per batch.

    Segments are named by time; temp files of a killed write start with a dot and are never read.
    """

    PATTERN = "[0-9]*.jsonl"

    def __init__(self, out_dir: Path) -> None:
        self.dir = out_dir / JOURNAL_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment = 0

    def load(self) -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for seg in sorted(self.dir.glob(self.PATTERN)):
            for n, line in enumerate(seg.read_text(encoding="utf-8").splitlines(), start=1):
                try:
                    row = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:
                    log.warning("journal %s line %d is unreadable; that row will be redone", seg.name, n)
                    continue
                if row:
                    rows[row["series_key"]] = row
        return rows

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` now: a kill after this call loses none of them."""
        if rows:
            self.segment += 1
            name = f"{time.time_ns():020d}-{os.getpid()}-{self.segment:06d}.jsonl"
            write_text(self.dir / name, "".join(json.dumps(r) + "\n" for r in rows))

    def compact(self, rows: dict[str, dict[str, Any]]) -> None:
        """Replace all segments by one holding ``rows`` (new segment first, so a kill here loses nothing)."""
        old = sorted(self.dir.glob(self.PATTERN))
        keep = self.dir / f"{time.time_ns():020d}-compact.jsonl"
        write_text(keep, "".join(json.dumps(r) + "\n" for r in rows.values()))
        for seg in old:
            seg.unlink(missing_ok=True)
