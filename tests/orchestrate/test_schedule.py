"""Dated batches without Airflow: one pseudonym key for every batch, each week's stages under its own folder."""

from __future__ import annotations

import datetime as dt
import os

from rich.console import Console

from pipeline.config import load_config
from pipeline.orchestrate.schedule import WEEKLY_STAGES, daily_config, partition, weekly_steps

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115


def test_every_batch_pseudonymises_with_the_archive_key_and_writes_under_its_date(tmp_path):
    """A key per day would give a patient a new pseudonym each day; a week writing into the config's
    one-off folders would hand its checkpoint to the next week."""
    config = load_config(
        None,
        {
            "ingest.out": str(tmp_path / "archive"),
            "schedule.incoming": str(tmp_path / "incoming"),
            "pretrain.out": str(tmp_path / "one-off-pretrain"),
            "finetune.out": str(tmp_path / "one-off-finetune"),
            "finetune.labels": str(tmp_path / "train.csv"),
            "evaluate.labels": str(tmp_path / "val.csv"),
        },
    )
    days = [dt.date(2026, 11, 29), dt.date(2026, 11, 30)]
    keys = {daily_config(config, day).ingest.pseudonym_key.get_secret_value() for day in days}
    weeks = [weekly_steps(config, day, QUIET) for day in days]
    keys |= {steps.config.ingest.pseudonym_key.get_secret_value() for steps in weeks}
    assert keys == {(tmp_path / "archive" / ".pseudonym_key").read_text().strip()}  # one key, the archive's
    for day, steps in zip(days, weeks, strict=True):
        assert steps.out == partition(config, "weekly", day)
        assert all(getattr(steps.config, stage).out is None for stage in WEEKLY_STAGES)  # so under steps.out
