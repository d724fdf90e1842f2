"""The ingest run in MLflow: resolved config, counts by reason, throughput, and the manifest as a dataset."""

from __future__ import annotations

import mlflow
from conftest import SAMPLE
from series_tools import copy_series
from test_rejections import _drop_middle


def test_ingest_run_is_tracked(ingest, tmp_path):
    copy_series(tmp_path / "in" / "gap", _drop_middle)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result, manifest = ingest(SAMPLE / "cxr_nih1000", tmp_path / "in", tracking_uri=uri)
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("medssl").experiment_id])
    assert run.data.tags["medssl.stage"] == "ingest"
    params = run.data.params
    assert params["ingest.tilt"] == "reject"
    assert params["ingest.pseudonym_key"] == "**********"  # the key itself never reaches MLflow
    metrics = run.data.metrics
    assert metrics["accepted"] == result.accepted == (manifest.status == "accepted").sum()
    assert metrics["rejected.MISSING_SLICES"] == 1
    assert metrics["files_per_s"] > 0
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "manifest"
    assert dataset_input.dataset.digest == result.dataset_digest
    assert dataset_input.tags[0].value == "ingest"


def test_a_batch_with_nothing_to_ingest_is_tracked_without_a_dataset(ingest, tmp_path):
    (tmp_path / "empty").mkdir()  # a night with no new studies
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result, manifest = ingest(tmp_path / "empty", tracking_uri=uri)
    assert manifest.empty and result.dataset_digest is None
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("medssl").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["accepted"] == 0
    assert not run.inputs.dataset_inputs
