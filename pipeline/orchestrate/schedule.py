"""Dated batches for the scheduler: where one interval's inputs and outputs live.

A scheduled run must redo the same work when it is re-run for the same interval, whatever arrived since, so
nothing here reads "the latest" anything. The daily batch ingests the studies of its date (the incoming
folder's dated subfolder, and the PACS queried for that StudyDate and the ``lookback_days`` before it, for
studies no other day's batch pulled) into ``ROOT/daily/DATE`` and scores them there. The weekly batch brings
the archive's ingest up to date, then freezes the manifest it trains on into ``ROOT/weekly/DATE``: a re-run
of that week trains on the same rows even after later studies arrived; with ``review.feed`` it first exports
the review database's labels there, kept as the week's labels likewise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console

from pipeline.config import Config, DicomwebConfig, load_config
from pipeline.data.manifest import MANIFEST, freeze
from pipeline.errors import ScheduleError
from pipeline.ingest import run_ingest
from pipeline.orchestrate.workflow import STAGES, Steps
from pipeline.pseudonym import resolve_key

DAILY, WEEKLY = "daily", "weekly"
STAGING = "staging"  # a daily partition's folder of pulled studies
WEEKLY_STAGES = tuple(stage for stage in STAGES if stage != "ingest")  # ingest is the week's own task


def batch(context: Mapping[str, Any]) -> tuple[Config, dt.date]:
    """The config (the run's ``config`` param, a YAML path) and the logical date of a scheduler run; a
    manual run without a logical date takes the day it was queued for."""
    when = context.get("logical_date") or context["dag_run"].run_after
    return load_config(context["params"]["config"]), when.date()


def partition(config: Config, kind: str, day: dt.date) -> Path:
    """``ROOT/<kind>/<YYYY-MM-DD>``: one folder per batch and logical date."""
    root = config.schedule.root or config.ingest.out
    if root is None:
        raise ScheduleError("scheduled batches need schedule.root (or ingest.out): where their dated folders go")
    return Path(root) / kind / day.isoformat()


def incoming_folder(config: Config, day: dt.date) -> Path | None:
    """``INCOMING/<YYYY-MM-DD>``: where the studies of ``day`` are dropped (by hand, or by ``medssl listen``) for
    that day's batch; None without ``schedule.incoming``."""
    return config.schedule.incoming / day.isoformat() if config.schedule.incoming else None


def daily_config(config: Config, day: dt.date) -> Config:
    """The config of ``day``'s batch: that day's incoming folder and PACS studies (``daily_pull``) into the
    day's partition, scored there (``scores.csv``) by the configured model."""
    part = partition(config, DAILY, day)
    incoming = incoming_folder(config, day)
    if incoming is None and not config.ingest.dicomweb.url:
        raise ScheduleError("the daily batch needs schedule.incoming (a folder per date) or ingest.dicomweb.url")
    pacs = daily_pull(config, day)
    ingest = config.ingest.model_copy(
        update={
            "sources": [incoming] if incoming and incoming.is_dir() else [],
            "out": part,
            "dicomweb": pacs,
            "pseudonym_key": archive_key(config, part),
        }
    )
    score = config.score.model_copy(update={"manifest": part / MANIFEST, "out": part / "scores.csv"})
    return config.model_copy(update={"ingest": ingest, "score": score})


def daily_pull(config: Config, day: dt.date) -> DicomwebConfig:
    """The PACS pull of ``day``'s batch: the StudyDates of that day and of ``lookback_days`` before it, into
    the day's own staging folder, skipping what any day's batch that could have seen a study already holds.

    A study stored late is found by the first batch whose look-back still covers its date, and only by that
    one: a batch of day D asks for dates D-L..D, which the batches of days D-L..D+L may each have pulled, so
    their ledgers are read too. So a re-run of any day fetches nothing another day's batch holds, and each
    study lives (and is scored) in the partition of the batch that pulled it.
    """
    pacs = config.ingest.dicomweb
    back = pacs.lookback_days
    near = [partition(config, DAILY, day + dt.timedelta(days=d)) / STAGING for d in range(-back, back + 1) if d]
    return pacs.model_copy(
        update={
            "since": day - dt.timedelta(days=back),
            "until": day,
            "staging": partition(config, DAILY, day) / STAGING,
            "ledgers": near,
        }
    )


def archive_key(config: Config, part: Path) -> SecretStr:
    """The archive's pseudonym key, for every batch: a key file per day would give a patient a new pseudonym
    each day, and a week's frozen manifest has no key file beside it to match its label CSVs with."""
    archive = config.ingest.out or part.parents[1]
    return SecretStr(resolve_key(config.ingest.secret(), Path(archive)).decode())


def has_studies(config: Config) -> bool:
    """Whether a daily config has anywhere to look: its dated folder exists, or the PACS is queried."""
    return bool(config.ingest.sources or config.ingest.dicomweb.url)


def weekly_manifest(config: Config, day: dt.date, console: Console) -> Path:
    """The manifest the week of ``day`` trains on: the archive (``ingest.sources``) ingested incrementally
    into ``ingest.out``, then frozen into the week's partition. A re-run finds the frozen copy and keeps it."""
    frozen = partition(config, WEEKLY, day) / MANIFEST
    if frozen.is_file():
        console.print(f"[dim]{day} week: training manifest frozen at its first run, reused[/]")
        return frozen
    return freeze(run_ingest(config, console).manifest, frozen)


def weekly_labels(config: Config, day: dt.date, console: Console) -> Path | None:
    """With ``review.feed``, what the readers decided by the week's first run, exported into its partition
    for finetune; a re-run keeps that export, as it keeps the frozen manifest. None without the feed."""
    if not config.review.feed:
        return None
    steps = weekly_steps(config, day, console)
    labels = steps.config.finetune.labels
    if labels is not None and labels.is_file():
        console.print(f"[dim]{day} week: review labels exported at its first run, reused[/]")
        return labels
    return steps.review_export()


def weekly_steps(config: Config, day: dt.date, console: Console) -> Steps:
    """The training stages of the week of ``day``, writing under its partition (``run-state.json`` there
    makes a re-run of the week skip what it already did)."""
    part = partition(config, WEEKLY, day)
    ingest = config.ingest.model_copy(update={"pseudonym_key": archive_key(config, part)})
    # Every stage under the week's folder, whatever ``out`` the config gives for a one-off ``medssl run``:
    # a shared folder would hand one week's checkpoint and run state to another.
    stages = {name: getattr(config, name).model_copy(update={"out": None}) for name in WEEKLY_STAGES}
    return Steps(config.model_copy(update={"ingest": ingest, **stages}), console, part)
