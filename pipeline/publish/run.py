"""The publish stage: each result of the table, as a DICOM SR, stored into the PACS over STOW-RS.

Where the original UIDs come from: the SR must reference the evaluated study, series and instances by UID,
but no medssl output holds a UID (the manifest and ``scores.csv`` name series by keyed hash). So they are read
here, in memory, from the DICOM files the series was ingested from (``pipeline.ingest.series_sources`` finds
them from the manifest row), together with the patient and study attributes the SR repeats. Those files are
the ingest staging folder for studies pulled from the PACS: as long as it is kept, results can be sent.

A result the PACS stored goes into the ledger at once; one it did not store keeps a reason (``HTTP_503``,
``CONNECTION_LOST``, ``SOURCE_MISSING``...) and is tried again on the next run. Once the server is unreachable
the results left are not tried (each would wait for the same refusal) and are counted ``CONNECTION_LOST``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pandas as pd
import pydicom
import requests
from rich.console import Console
from rich.table import Table

from pipeline import tracking
from pipeline.config import Config, DicomwebAuthConfig
from pipeline.data.manifest import MANIFEST, read_rows
from pipeline.errors import DicomwebError, PublishError
from pipeline.ingest import NOT_DICOM, SeriesRow, connect, failure_reason, quiet_http_logs, safe_url, series_sources
from pipeline.pseudonym import read_key
from pipeline.publish.ledger import PublishLedger, entry
from pipeline.publish.report import Result, build_report
from pipeline.report import report_table

if TYPE_CHECKING:
    from dicomweb_client.api import DICOMwebClient

log = logging.getLogger(__name__)
# Reasons that are the PACS's, not the series': the run that meets them should be retried.
PACS_REASONS = ("HTTP_", "TIMEOUT", "CONNECTION_LOST", "TRANSFER_ERROR", "STOW_REFUSED")
COLUMNS = {"series_key", "score", "decision", "threshold", "model", "version"}


@dataclass
class PublishResult:
    """What a publish did: results stored now, stored before, and not stored (by reason)."""

    scores: Path
    ledger: Path
    url: str
    published: int = 0
    already: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # series_key|model|version -> reason
    seconds: float = 0.0

    @property
    def pending(self) -> int:
        """Results the PACS did not take (not the ones whose series is gone): a retry may send them."""
        return sum(n for reason, n in self.failed.items() if reason.startswith(PACS_REASONS))


def _paths(config: Config) -> tuple[Path, Path]:
    """The results table and the manifest its series come from (see configs/default.yaml, publish)."""
    cfg, score = config.publish, config.score
    scores = cfg.scores or score.out or (score.manifest.parent / "scores.csv" if score.manifest else None)
    if scores is None:
        raise PublishError("publish needs the results table of medssl score (--scores)")
    if not scores.is_file():
        raise PublishError(f"results table not found: {scores}")
    return scores, cfg.manifest or score.manifest or scores.parent / MANIFEST


def _results(scores: Path) -> list[Result]:
    try:
        table = pd.read_csv(scores, dtype={"version": str, "series_key": str, "model": str})
    except (OSError, ValueError) as exc:
        raise PublishError(f"{scores}: not a readable results table ({type(exc).__name__})") from None
    if missing := COLUMNS - set(table.columns):
        raise PublishError(f"{scores}: not a medssl score table (no {', '.join(sorted(missing))} column)")
    return [
        Result(r.series_key, float(r.score), r.decision, float(r.threshold), r.model, r.version)
        for r in table.itertuples()
    ]


def _sources(todo: list[Result], manifest: Path, config: Config) -> dict[str, list[str] | str]:
    """Each pending result's series: the paths of its DICOM files, or why they cannot be named."""
    if not todo:
        return {}
    key = read_key(config.ingest.secret(), manifest.parent)
    if key is None:
        raise PublishError(
            f"no pseudonym key for {manifest}: set the ingest.pseudonym_key (or $MEDSSL_PSEUDONYM_KEY) it was made with"
        )
    rows = read_rows(manifest).set_index("series_key")
    wanted = {r.series_key for r in todo}
    found: dict[str, list[str] | str] = dict.fromkeys(wanted - set(rows.index), "NOT_IN_MANIFEST")
    listed = [
        SeriesRow(k, str(rows.at[k, "source_dir"]), int(rows.at[k, "n_instances"]), str(rows.at[k, "kind"]))
        for k in sorted(wanted - set(found))
    ]
    return found | series_sources(listed, config.ingest, key)


def _send(client: DICOMwebClient, result: Result, paths: list[str], series_number: int) -> str | None:
    """Build and store the SR of one result; None when the PACS took it, else the reason."""
    # pydicom's and highdicom's warnings about odd values quote them (a birth date, a name): none may reach
    # a log, so this stage's reading and building is done with warnings off.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            evidence = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
        except FileNotFoundError:
            return "SOURCE_MISSING"
        except Exception:  # unreadable now (cut short, replaced, a header pydicom cannot parse)
            return "SOURCE_CHANGED"
        try:
            sr = build_report(evidence, result, series_number)
        except (AttributeError, TypeError, ValueError) as exc:  # a header highdicom cannot reference
            log.debug("series %s: no SR (%s)", result.series_key, type(exc).__name__)  # the text may quote UIDs
            return "SR_NOT_BUILT"
    try:
        answer = client.store_instances([sr])
    except requests.RequestException as exc:
        return failure_reason(exc)
    return "STOW_REFUSED" if answer.get("FailedSOPSequence") else None  # present and empty on success


def _login(config: Config, url: str) -> DicomwebAuthConfig:
    """The pull's login, only for the server the pull logs in to: a publish.url on another host (or scheme or
    port) must not receive that password or token, and gets no login."""
    pulled = config.ingest.dicomweb
    same = pulled.url is not None and urlsplit(pulled.url)[:2] == urlsplit(url)[:2]
    return pulled.auth if same else DicomwebAuthConfig()


def run_publish(config: Config, console: Console | None = None) -> PublishResult:
    """Send every result of the table the ledger lacks to the PACS as an SR; returns counts and reasons."""
    console = console or Console(stderr=True)
    start = time.perf_counter()
    scores, manifest = _paths(config)
    url = config.publish.url or config.ingest.dicomweb.url
    if not url:
        raise PublishError("no PACS to publish to: give --dicomweb URL, publish.url or ingest.dicomweb.url")
    results = _results(scores)
    ledger = PublishLedger(scores)
    todo = [r for r in results if entry(r.series_key, r.model, r.version) not in ledger]
    out = PublishResult(scores, ledger.path, safe_url(url), already=len(results) - len(todo))
    sources = _sources(todo, manifest, config)
    quiet_http_logs()
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # its INFO lines name the datasets it copies by UID
    try:
        client = connect(config.ingest.dicomweb.model_copy(update={"url": url, "auth": _login(config, url)}))
    except DicomwebError as exc:
        raise PublishError(exc.message) from None
    client.set_http_retry_params(retry=False)  # a failed result waits for the next run (or the task's retry)
    with tracking.stage_run(config, "publish"):
        lost = False
        for result in todo:
            paths = sources[result.series_key]
            if isinstance(paths, str):
                reason: str | None = paths
            elif lost:
                reason = "CONNECTION_LOST"
            else:
                reason = _send(client, result, paths, config.publish.series_number)
            name = entry(result.series_key, result.model, result.version)
            if reason is None:
                ledger.add(name)
                out.published += 1
                continue
            lost = lost or reason == "CONNECTION_LOST"
            out.failed[reason] += 1
            out.failures[name] = reason
            level = logging.DEBUG if reason == NOT_DICOM else logging.WARNING  # an image has no UIDs to send
            log.log(level, "series %s (%s %s) not published: %s", *name.split("|"), reason)
        out.seconds = time.perf_counter() - start
        tracking.log_metrics(
            {
                "published": out.published,
                "already_published": out.already,
                "not_published": sum(out.failed.values()),
                **{f"not_published.{k}": v for k, v in out.failed.items()},
            }
        )
    return out


def summary_table(result: PublishResult) -> Table:
    rows = [
        ("PACS", result.url),
        ("SRs stored now", str(result.published)),
        ("stored before (ledger)", str(result.already)),
        *((f"not stored: {reason}", str(n)) for reason, n in sorted(result.failed.items())),
        ("ledger", str(result.ledger)),
    ]
    return report_table("publish", rows)
