"""Weekly retraining: [review export] -> pretrain -> finetune -> evaluate -> promote on the archive as of the
logical date.

Each task calls one stage of ``pipeline.orchestrate.workflow.Steps`` (the stages ``medssl run`` chains) for the week's
partition ``ROOT/weekly/DATE``. The first task brings the archive's ingest up to date and freezes the
manifest the week trains on, so a re-run of the week trains on the same rows and skips the stages whose
inputs are unchanged. Before it, with ``review.feed``, the review database's labels are exported into the
partition and the week's detector trains on them (without the feed the task does nothing). Heavy imports
stay inside the tasks, so parsing this file is cheap for the scheduler.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.sdk import dag, get_current_context, task
from medssl_common import settings

if TYPE_CHECKING:
    from pipeline.orchestrate.workflow import Steps


def _steps() -> Steps:
    from rich.console import Console

    from pipeline.orchestrate.schedule import batch, weekly_steps

    config, day = batch(get_current_context())
    return weekly_steps(config, day, Console())


@dag(**settings("medssl_weekly", "@weekly", retries=1, retry_delay=dt.timedelta(minutes=30)))
def medssl_weekly() -> None:
    @task
    def review_export() -> str | None:
        """The readers' labels for this week's finetune, when the config feeds them (review.feed)."""
        from rich.console import Console

        from pipeline.orchestrate.schedule import batch, weekly_labels

        config, day = batch(get_current_context())
        labels = weekly_labels(config, day, Console())
        return None if labels is None else str(labels)

    @task
    def ingest() -> str:
        """The archive ingested incrementally, its manifest frozen for the week."""
        from rich.console import Console

        from pipeline.orchestrate.schedule import batch, weekly_manifest

        config, day = batch(get_current_context())
        return str(weekly_manifest(config, day, Console()))

    @task
    def pretrain(manifest: str) -> str:
        return _steps().pretrain(Path(manifest))

    @task
    def finetune(manifest: str, encoder: str) -> str:
        return _steps().finetune(Path(manifest), encoder)

    @task
    def evaluate(detector: str) -> float:
        return float(_steps().evaluate(detector)["auroc"])

    @task
    def promote(detector: str) -> str:
        """Gates this week's detector, by version: a cleared and rerun week never gates another's."""
        return str(_steps().promote(detector).get("reason", "tracking is off"))

    manifest = ingest()
    review_export() >> manifest
    detector = finetune(manifest, pretrain(manifest))
    evaluate(detector) >> promote(detector)


weekly = medssl_weekly()
