"""The Airflow DAGs, run for real with ``dag.test()`` on a sqlite metadata DB in a temporary AIRFLOW_HOME.

Each DAG runs in its own Python process (Airflow reads its settings and configures logging at import), on
real chest X-rays and DICOM from data/sample, against a real MLflow store: the weekly DAG trains and
promotes a champion, then the daily DAG ingests a day's studies, scores them with it and publishes the results
into the PACS as DICOM SRs.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from conftest import PNEUMONIA, ROOT, SAMPLE, TINY_ENCODER
from dicomweb_client.api import DICOMwebClient
from orthanc import dated_copy, needs_orthanc, orthanc, store

pytestmark = [
    pytest.mark.slow,  # real Airflow runs of both DAGs
    pytest.mark.skipif(importlib.util.find_spec("airflow") is None, reason="the airflow extra is absent"),
    needs_orthanc,
]
AIRFLOW = Path(sys.executable).parent / "airflow"
DAY = "2026-11-30"
PATIENT = ("ROE^RICHARD", "MRN-0815-TEST")
SERIES = SAMPLE / "dicom2nifti_testdata" / "generic" / "anatomical" / "001"


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    }
    subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    return env


def run_dag(env: dict[str, str], dag_file: str, day: str, config: Path) -> dict[str, str]:
    """``dag.test()`` for one logical date in a fresh process; the run's state and each task's state."""
    script = f"""
import datetime as dt, json, runpy, sys
sys.path.insert(0, {str(ROOT / "dags")!r})  # as Airflow does for its DAG folder
from airflow.sdk import DAG
dag = next(v for v in runpy.run_path({str(ROOT / "dags" / dag_file)!r}).values() if isinstance(v, DAG))
for t in dag.tasks:
    t.retries = 0  # a failure fails the test now, not after the DAG's retry delay
when = dt.datetime.fromisoformat({day!r}).replace(tzinfo=dt.UTC)
run = dag.test(logical_date=when, run_conf={{"config": {str(config)!r}}})
states = {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
print("DAGRUN", json.dumps({{"run": str(run.state), **states}}))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("DAGRUN ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-4000:] + proc.stderr[-4000:]
    states = json.loads(line.removeprefix("DAGRUN "))
    failed = proc.stdout.find("[error")  # a failed task's traceback follows its first error line
    assert states["run"] == "success" or failed < 0, proc.stdout[failed : failed + 6000]
    return states


@pytest.fixture(scope="module")
def site(tmp_path_factory, dask_scheduler) -> Iterator[tuple[Path, Path, str]]:
    """A hospital's config (YAML, as the DAGs read it), its folder and its PACS (a real Orthanc holding one
    study of DAY and one of the day before; its DICOMweb root)."""
    where = tmp_path_factory.mktemp("site")
    with orthanc(where / "pacs") as pacs:
        for day in (DAY, "2026-11-29"):
            store(pacs, dated_copy(SERIES, dt.date.fromisoformat(day), PATIENT, f"medssl-dag-{day}"))
        yield _site(where, dask_scheduler, f"{pacs}/dicom-web"), where, f"{pacs}/dicom-web"


def _site(where: Path, dask_scheduler: str, pacs: str) -> Path:
    settings = {
        "tracking": {"uri": f"sqlite:///{where}/mlflow.db"},
        "dask": {"scheduler": dask_scheduler},
        "ingest": {
            "sources": [str(PNEUMONIA / "train")],
            "out": str(where / "archive"),
            "dicomweb": {"url": pacs, "timeout": 10},
        },
        "pretrain": {
            "size": 28,
            "encoder": TINY_ENCODER,
            "epochs": 1,
            "batch_size": 16,
            "slices_per_volume": 4,
            "monitor": {"every": 0},
            "out": str(where / "one-off-pretrain"),  # for `medssl run`; the weekly batch keeps its own
        },
        "finetune": {"labels": str(PNEUMONIA / "train" / "labels.csv"), "budget": "16shot", "seeds": 1},
        "evaluate": {"labels": str(PNEUMONIA / "val" / "labels.csv"), "bootstrap": 50},
        "schedule": {"root": str(where / "batches"), "incoming": str(where / "incoming")},
    }
    config = where / "pipeline.yaml"
    config.write_text(yaml.safe_dump(settings))
    return config


def _sr_series(pacs: str) -> int:
    """QIDO-RS: how many SR series the PACS holds (medssl stores one per result)."""
    return len(DICOMwebClient(pacs).search_for_series(search_filters={"Modality": "SR"}))


def test_weekly_trains_and_promotes_then_daily_scores_and_publishes_the_days_studies(airflow_env, site):
    config, where, pacs = site
    weekly = run_dag(airflow_env, "medssl_weekly.py", DAY, config)
    # review_export succeeds doing nothing: this site does not feed review labels (test_review_feed.py does).
    stages = ["run", "review_export", "ingest", "pretrain", "finetune", "evaluate", "promote"]
    assert weekly == dict.fromkeys(stages, "success")
    frozen = where / "batches" / "weekly" / DAY / "manifest.parquet"
    # The week trains on the archive as it was: the sample's 100 X-rays and the PACS's two studies, frozen.
    assert (pd.read_parquet(frozen).status == "accepted").sum() == 100 + 2
    assert (frozen.parent / "pretrain" / "encoder.pt").is_file() and not (where / "one-off-pretrain").exists()

    mlflow.set_tracking_uri(f"sqlite:///{where}/mlflow.db")
    champion = mlflow.MlflowClient().get_model_version_by_alias("medssl-detector", "champion")

    # The day's studies: one dropped into the incoming folder, and the PACS's (pulled by StudyDate).
    shutil.copytree(SERIES, where / "incoming" / DAY / "study-1")
    daily = run_dag(airflow_env, "medssl_daily.py", DAY, config)
    assert daily == {"run": "success", "ingest": "success", "score": "success", "publish": "success"}
    batch = where / "batches" / "daily" / DAY
    pulled = [p for p in (batch / "staging").iterdir() if not p.name.startswith(".")]
    # The PACS study of DAY, and the day before's: no batch of that day pulled it, and DAY looks back 3 days.
    assert len(pulled) == 2
    scores = pd.read_csv(batch / "scores.csv", dtype={"version": str})
    assert len(scores) == 3 and set(scores.version) == {str(champion.version)}
    assert set(scores.series_key) == set(
        pd.read_parquet(batch / "manifest.parquet").query("status == 'accepted'").series_key
    )
    assert set(scores.decision) <= {"normal", "abnormal"}
    assert _sr_series(pacs) == 3  # every result back in the PACS (the incoming study's SR too: one PACS)

    again = run_dag(airflow_env, "medssl_daily.py", DAY, config)  # a re-run of the interval adds nothing
    assert again["run"] == "success"
    assert len(pd.read_csv(batch / "scores.csv")) == 3
    assert _sr_series(pacs) == 3

    # Another detector becomes @challenger (as a later week's, or an adapt, would make it); then the week
    # is run again: its stages are not redone, and its promote still gates its own detector.
    client = mlflow.MlflowClient()
    other = client.create_model_version("medssl-detector", champion.source, champion.run_id)
    client.set_registered_model_alias("medssl-detector", "challenger", other.version)
    rerun = run_dag(airflow_env, "medssl_weekly.py", DAY, config)
    assert rerun["run"] == "success"
    week = where / "batches" / "weekly" / DAY
    state = json.loads((week / "run-state.json").read_text())
    assert set(state) == {"finetune", "evaluate", "promote"}
    assert len(client.search_model_versions("name='medssl-detector'")) == 2  # the one made here, no new one
    assert json.loads((week / "promotion" / "decision.json").read_text())["challenger_version"] == str(champion.version)


def test_a_day_without_studies_succeeds_and_without_sources_is_skipped(airflow_env, site):
    config, where, _ = site
    quiet = run_dag(airflow_env, "medssl_daily.py", "2026-11-28", config)  # the PACS has nothing that day
    assert quiet == {"run": "success", "ingest": "success", "score": "success", "publish": "success"}
    assert (
        not (where / "batches" / "daily" / "2026-11-28" / "scores.csv").is_file()
        or pd.read_csv(where / "batches" / "daily" / "2026-11-28" / "scores.csv").empty
    )

    settings = yaml.safe_load(config.read_text())
    del settings["ingest"]["dicomweb"]  # no PACS, and no incoming folder for that day: nothing to look at
    folders_only = where / "folders-only.yaml"
    folders_only.write_text(yaml.safe_dump(settings))
    daily = run_dag(airflow_env, "medssl_daily.py", "2026-11-27", folders_only)
    assert daily == {"run": "success", "ingest": "skipped", "score": "skipped", "publish": "skipped"}


def test_the_daily_run_of_a_day_starts_when_the_day_is_over(airflow_env):
    """A day's studies arrive during that day: its run (logical date D) must start after D ends, not at its
    start as a plain cron trigger would, and late enough for an association begun before midnight to end."""
    script = f"""
import datetime as dt, runpy, sys
sys.path.insert(0, {str(ROOT / "dags")!r})
from airflow.sdk import DAG
from airflow.timetables.base import TimeRestriction
dag = next(v for v in runpy.run_path({str(ROOT / "dags" / "medssl_daily.py")!r}).values() if isinstance(v, DAG))
day = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
info = dag.timetable.next_dagrun_info(
    last_automated_data_interval=None, restriction=TimeRestriction(earliest=day, latest=None, catchup=True)
)
print("NEXT", info.logical_date.isoformat(), info.run_after.isoformat())
"""
    proc = subprocess.run([sys.executable, "-c", script], env=airflow_env, cwd=ROOT, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("NEXT ")), None)
    assert proc.returncode == 0 and line, proc.stdout[-2000:] + proc.stderr[-2000:]
    logical, run_after = (dt.datetime.fromisoformat(v) for v in line.split()[1:])
    assert logical.date() == dt.date(2026, 11, 30) and run_after - logical == dt.timedelta(days=1)
    assert run_after.time() == dt.time(0, 30)  # half an hour for a C-STORE association begun before midnight
