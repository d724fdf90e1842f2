"""The loop closes: with ``review.feed`` a pipeline run exports the review database's labels first, finetune
trains on them, and the detector's MLflow run names the export run; a week keeps its first export."""

from __future__ import annotations

import datetime as dt
import os

import mlflow
import pandas as pd
from conftest import PNEUMONIA, TEST_KEY, TINY_ENCODER
from rich.console import Console

from pipeline.config import load_config
from pipeline.data.items import digest
from pipeline.data.labelled import labelled_items
from pipeline.orchestrate.schedule import weekly_labels
from pipeline.orchestrate.workflow import Steps
from pipeline.pseudonym import image_key
from pipeline.review.store import Decision, open_database, record

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
DAY = dt.date(2026, 12, 7)


def _decide(url: str, calls: dict[str, int], readers: tuple[str, ...] = ("r-ann", "r-bob")) -> None:
    """Every reader makes the same call on every scan (agreed calls are the export's labels)."""
    engine = open_database(url)
    now = dt.datetime.now(dt.UTC)
    for key, label in calls.items():
        for reader in readers:
            call = "abnormal" if label else "normal"
            record(engine, Decision(key, reader, "reader", call, "", 2.0, now))


def _config(tmp_path, **more):
    settings = {
        "ingest.out": str(tmp_path / "out"),
        "ingest.pseudonym_key": TEST_KEY,
        "tracking.uri": f"sqlite:///{tmp_path}/mlflow.db",
        "pretrain.size": 28,
        "pretrain.encoder": TINY_ENCODER,
        "finetune.encoder": "scratch",
        "finetune.budget": "8shot",
        "finetune.seeds": 1,
        "finetune.register_detector": False,
        "evaluate.labels": str(PNEUMONIA / "val" / "labels.csv"),
        "review.database": f"sqlite:///{tmp_path / 'review.db'}",
        "review.feed": True,
        "schedule.root": str(tmp_path / "batches"),
    }
    return load_config(None, settings | more)


def test_finetune_trains_on_the_review_export_and_names_its_run(pneumonia_manifest, tmp_path):
    table = pd.read_csv(PNEUMONIA / "train" / "labels.csv")
    chosen = pd.concat([table[table.label == 0].head(20), table[table.label == 1].head(20)])
    calls = {
        image_key(TEST_KEY.encode(), PNEUMONIA / "train" / p): int(y)
        for p, y in zip(chosen.path, chosen.label, strict=True)
    }
    _decide(f"sqlite:///{tmp_path / 'review.db'}", calls)
    config = _config(tmp_path)
    steps = Steps(config, QUIET, tmp_path / "out")

    exported = steps.review_export()
    assert exported == tmp_path / "out" / "review-export" / "labels.csv" == steps.config.finetune.labels
    assert dict(pd.read_csv(exported).itertuples(index=False)) == calls
    steps.finetune(pneumonia_manifest, "scratch")

    mlflow.set_tracking_uri(config.tracking.uri)
    runs = mlflow.search_runs(experiment_names=["medssl"], output_format="list")
    export = next(r for r in runs if r.data.tags["medssl.stage"] == "review-export")
    finetune = next(r for r in runs if r.data.tags["medssl.stage"] == "finetune")
    assert finetune.data.tags["medssl.review_export_run"] == export.info.run_id
    assert finetune.data.tags["medssl.labels_source"] == "review"
    # It trained on the exported scans (the digest of its labelled items), and logged the CSV it read: the
    # same table as the export's dataset.
    found = labelled_items(pneumonia_manifest, exported, TEST_KEY, 2, 0, QUIET)
    assert {it["scan"] for it in found} == set(calls)
    assert finetune.data.tags["medssl.dataset_digest"] == digest(found)
    (used,) = finetune.inputs.dataset_inputs
    (made,) = export.inputs.dataset_inputs
    assert used.dataset.source == made.dataset.source and used.dataset.digest == made.dataset.digest
    assert finetune.data.params["finetune.labels"] == str(exported)


def test_a_week_keeps_the_labels_of_its_first_export_and_no_feed_exports_nothing(pneumonia_manifest, tmp_path):
    url = f"sqlite:///{tmp_path / 'review.db'}"
    keys = [
        image_key(TEST_KEY.encode(), PNEUMONIA / "train" / p)
        for p in pd.read_csv(PNEUMONIA / "train" / "labels.csv").path
    ]
    _decide(url, {keys[0]: 0, keys[1]: 1})
    config = _config(tmp_path, **{"tracking.enabled": False})
    first = weekly_labels(config, DAY, QUIET)
    assert first == tmp_path / "batches" / "weekly" / DAY.isoformat() / "review-export" / "labels.csv"
    _decide(url, {keys[2]: 1})  # decided after the week's first run: next week's labels, not this re-run's
    assert weekly_labels(config, DAY, QUIET) == first and len(pd.read_csv(first)) == 2

    off = config.model_copy(update={"review": config.review.model_copy(update={"feed": False})})
    assert weekly_labels(off, DAY, QUIET) is None
    assert (
        Steps(
            off.model_copy(update={"finetune": off.finetune.model_copy(update={"labels": first})}), QUIET, tmp_path
        ).review_export()
        is None
    )
