"""Daily hospital batch: ingest the day's new studies (incoming folder and PACS), score them with the champion,
send the results back to the PACS as DICOM SRs.

Each task calls one ``pipeline`` stage function on the config of its logical date (``pipeline.orchestrate.schedule``):
the day's studies go to ``ROOT/daily/DATE``, and its results table is ``ROOT/daily/DATE/scores.csv``, so a
re-run of a day redoes that day only (ingest converts nothing twice, score skips what that model version
already scored, publish sends nothing twice). Heavy imports stay inside the tasks, so parsing this file is
cheap for the scheduler.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.sdk import dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException
from airflow.timetables.interval import CronDataIntervalTimetable
from medssl_common import settings

# A data interval per day, run when the day is over: the run of logical date D starts at D+1 00:30 UTC, once
# D's studies are in (a plain "@daily" would trigger at D 00:00, before any of them had arrived). The half
# hour lets a C-STORE association begun before midnight finish: medssl listen files it under the day it began.
DAILY = CronDataIntervalTimetable("30 0 * * *", timezone="UTC")


@dag(**settings("medssl_daily", DAILY, retries=2, retry_delay=dt.timedelta(minutes=10)))
def medssl_daily() -> None:
    @task
    def ingest() -> str:
        """The day's studies into its partition (the PACS is queried for that StudyDate and the
        ``ingest.dicomweb.lookback_days`` before it, for studies stored late)."""
        from rich.console import Console

        from pipeline.ingest import run_ingest
        from pipeline.orchestrate.schedule import batch, daily_config, has_studies

        config, day = batch(get_current_context())
        day_config = daily_config(config, day)
        if not has_studies(day_config):
            raise AirflowSkipException(f"no incoming folder for {day} and no PACS configured")
        return str(run_ingest(day_config, Console()).manifest)

    @task
    def score(manifest: str) -> str:
        """The day's series scored by the champion (pinned to its version when the task starts)."""
        from rich.console import Console

        from pipeline.orchestrate.schedule import batch, daily_config
        from pipeline.score import run_score

        config, day = batch(get_current_context())
        day_config = daily_config(config, day)
        day_config.score.manifest = Path(manifest)
        return str(run_score(day_config, Console()).out)

    @task
    def publish(scores: str) -> int:
        """The day's results into the PACS as SRs; fails when the PACS refused some, so the task's retries
        send them (the next day's batch has a results table of its own)."""
        from rich.console import Console

        from pipeline.errors import PublishError
        from pipeline.orchestrate.schedule import batch, daily_config
        from pipeline.publish import run_publish

        config, day = batch(get_current_context())
        if not (config.publish.url or config.ingest.dicomweb.url):
            raise AirflowSkipException("no PACS configured (publish.url or ingest.dicomweb.url): results stay in CSV")
        day_config = daily_config(config, day)
        day_config.publish.scores = Path(scores)
        result = run_publish(day_config, Console())
        if result.pending:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(result.failed.items()))
            raise PublishError(f"{result.pending} result(s) not taken by the PACS ({reasons}); a retry sends them")
        return result.published

    publish(score(ingest()))


daily = medssl_daily()
