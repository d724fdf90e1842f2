"""What the medssl DAGs share: where their config comes from and how they are scheduled.

Not a DAG itself (``.airflowignore`` keeps the scheduler from parsing it as one); Airflow puts the DAG
folder on ``sys.path``, so the DAG files import it by name.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from airflow.sdk import Param
from airflow.timetables.base import Timetable

CONFIG = os.environ.get("MEDSSL_CONFIG", str(Path(__file__).resolve().parents[1] / "configs" / "pipeline.yaml"))


def settings(dag_id: str, schedule: str | Timetable, retries: int, retry_delay: dt.timedelta) -> dict[str, Any]:
    """``@dag`` arguments: one run at a time, no catch-up of missed intervals, the config as a run param."""
    return {
        "dag_id": dag_id,
        "schedule": schedule,
        "start_date": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {"retries": retries, "retry_delay": retry_delay},
        "params": {"config": Param(CONFIG, type="string", description="medssl YAML config (MEDSSL_CONFIG)")},
        "tags": ["medssl"],
    }
