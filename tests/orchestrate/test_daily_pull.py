"""The daily batch's PACS pull looks back ``ingest.dicomweb.lookback_days``: a study stored after its day's
batch ran is pulled by the next day's batch, into that day's partition, and no study is fetched twice,
whichever day is run or re-run. A real Orthanc, the batches run as the daily DAG's ingest task runs them.
"""

from __future__ import annotations

import datetime as dt
import io

import pandas as pd
import pydicom
import pytest
from conftest import SAMPLE, TEST_KEY
from orthanc import dated_copy, needs_orthanc, orthanc, store
from rich.console import Console

from pipeline.config import load_config
from pipeline.ingest import run_ingest
from pipeline.orchestrate.schedule import daily_config
from pipeline.pseudonym import pseudonym

pytestmark = [pytest.mark.slow, needs_orthanc]  # a real Orthanc and real ingests
SERIES = SAMPLE / "dicom2nifti_testdata" / "generic" / "anatomical" / "001"
DAY = dt.date(2026, 5, 11)
PATIENT = ("POE^EDGAR", "MRN-1849-TEST")


def _study(day: dt.date, seed: str) -> tuple[list[bytes], str]:
    """A made-up study of StudyDate ``day``: its instances and its staging folder name."""
    payloads = dated_copy(SERIES, day, PATIENT, seed)
    uid = pydicom.dcmread(io.BytesIO(payloads[0]), stop_before_pixels=True).StudyInstanceUID
    return payloads, pseudonym(TEST_KEY.encode(), "study|" + uid)


def test_a_study_stored_after_its_days_run_is_pulled_the_next_day_and_none_twice(tmp_path, dask_scheduler):
    on_time, on_time_key = _study(DAY, "medssl-on-time")
    late, late_key = _study(DAY, "medssl-late")  # StudyDate DAY, but stored after DAY's batch ran
    too_old, _ = _study(DAY - dt.timedelta(days=4), "medssl-too-old")  # before DAY's look-back of 3 days
    quiet = Console(file=io.StringIO())
    with orthanc(tmp_path / "pacs") as root:
        config = load_config(
            None,
            {
                "ingest.out": str(tmp_path / "archive"),
                "ingest.pseudonym_key": TEST_KEY,
                "ingest.dicomweb.url": f"{root}/dicom-web",
                "ingest.dicomweb.timeout": 10,
                "schedule.root": str(tmp_path / "batches"),
                "dask.scheduler": dask_scheduler,
                "tracking.enabled": False,
            },
        )
        assert config.ingest.dicomweb.lookback_days == 3  # the default
        store(root, on_time + too_old)
        first = run_ingest(daily_config(config, DAY), quiet).pull
        assert (first.found, first.fetched) == (1, 1)  # the study of StudyDate DAY-4 is out of reach

        store(root, late)
        next_day = DAY + dt.timedelta(days=1)
        second = run_ingest(daily_config(config, next_day), quiet)
        assert (second.pull.found, second.pull.fetched, second.pull.already) == (2, 1, 1)
        assert second.accepted == 1 and len(pd.read_parquet(second.manifest)) == 1  # the late study alone

        rerun = run_ingest(daily_config(config, DAY), quiet).pull  # a re-run of DAY after DAY+1 pulled the late one
        assert (rerun.found, rerun.fetched, rerun.already) == (2, 0, 2)
        rerun_next = run_ingest(daily_config(config, next_day), quiet).pull
        assert (rerun_next.fetched, rerun_next.already) == (0, 2)

    def pulled(day: dt.date) -> set[str]:
        return {p.name for p in (tmp_path / "batches" / "daily" / day.isoformat() / "staging").iterdir()}

    assert pulled(DAY) == {".ledger.json", on_time_key}
    assert pulled(next_day) == {".ledger.json", late_key}
