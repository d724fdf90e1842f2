"""medssl run: every stage on real chest X-rays in one MLflow parent run; a re-run skips what is unchanged."""

from __future__ import annotations

import json
import os
import subprocess

import mlflow
import pandas as pd
import pytest
import yaml
from conftest import PNEUMONIA, ROOT, TEST_KEY, TINY_ENCODER
from rich.console import Console

from pipeline.config import load_config
from pipeline.data.items import digest, items
from pipeline.data.labelled import excluded_scans, labelled_items, validation_split
from pipeline.data.manifest import read_manifest
from pipeline.errors import WorkflowError
from pipeline.orchestrate.workflow import STAGES, Steps, run_workflow
from pipeline.pseudonym import image_key

pytestmark = pytest.mark.slow  # the whole pipeline, several times

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115


def _config(tmp_path, dask_scheduler):
    return load_config(
        None,
        {
            "ingest.sources": [str(PNEUMONIA / "train")],
            "ingest.out": str(tmp_path / "out"),
            "ingest.pseudonym_key": TEST_KEY,
            "dask.scheduler": dask_scheduler,
            "tracking.uri": f"sqlite:///{tmp_path}/mlflow.db",
            "pretrain.size": 28,
            "pretrain.encoder": TINY_ENCODER,
            "pretrain.epochs": 1,
            "pretrain.batch_size": 16,
            "pretrain.monitor.every": 0,
            "finetune.labels": str(PNEUMONIA / "train" / "labels.csv"),
            "finetune.budget": "16shot",
            "finetune.seeds": 1,
            "finetune.epochs": 5,
            "curve.budgets": ["4shot", "16shot"],
            "evaluate.labels": str(PNEUMONIA / "val" / "labels.csv"),
            "evaluate.bootstrap": 50,
        },
    )


def test_every_stage_runs_nested_then_a_rerun_skips_them(tmp_path, dask_scheduler):
    config = _config(tmp_path, dask_scheduler)
    first = run_workflow(config, QUIET)
    assert first.outcome == dict.fromkeys(STAGES, "ran")
    assert first.outputs["pretrain.encoder"] == "models:/medssl-encoder/1"
    assert first.outputs["finetune.detector"] == "models:/medssl-detector/1"
    assert first.outputs["promote.promoted"] == "True"
    curve = json.loads((tmp_path / "out" / "curve" / "curve.json").read_text())
    assert {(row["arm"], row["budget"], row["labels"]) for row in curve} == {
        (arm, budget, n) for arm in ("ssl (linear)", "scratch (full)") for budget, n in (("4shot", 8), ("16shot", 32))
    }
    # Each point carries its bootstrap interval over seeds and validation scans, within [0, 1].
    assert all(0 <= row["ci_low"] <= row["auroc_mean"] <= row["ci_high"] <= 1 for row in curve)
    assert any(row["ci_low"] < row["ci_high"] for row in curve)
    assert (tmp_path / "out" / "curve" / "label-efficiency.png").stat().st_size > 10_000

    # The encoder never saw the finetune split's validation part, even unlabelled: its AUROC is measured there.
    # The run trained on the manifest's items less those of the validation part (the digest names them).
    manifest = tmp_path / "out" / "manifest.parquet"
    labelled = labelled_items(manifest, PNEUMONIA / "train" / "labels.csv", TEST_KEY, 2, 0, QUIET)
    fine = config.finetune
    validation = {it["scan"] for it in validation_split(labelled, fine.val_fraction, fine.seed)[1]}
    rows = read_manifest(manifest)
    trained = digest(items(rows[~rows.series_key.isin(validation)], manifest.parent, 2, 8))
    recorded = json.loads((tmp_path / "out" / "pretrain" / "pretrain.json").read_text())["dataset_digest"]
    assert validation and recorded == trained != digest(items(rows, manifest.parent, 2, 8))

    # medssl pretrain with the run's settings (the exclusions it filled in) trains on exactly those scans.
    settings = tmp_path / "run.yaml"
    settings.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude={"ingest": {"pseudonym_key"}})))
    held = [tmp_path / "out" / "held-out" / "validation.parquet", PNEUMONIA / "val" / "labels.csv"]
    args = ["pretrain", "--config", str(settings), "--manifest", str(manifest), "--out", str(tmp_path / "alone")]
    args += [a for path in held for a in ("--exclude", str(path))] + ["--no-tracking"]
    env = {**os.environ, "MEDSSL_PSEUDONYM_KEY": TEST_KEY}
    proc = subprocess.run([str(ROOT / ".venv/bin/medssl"), *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "alone" / "pretrain.json").read_text())["dataset_digest"] == recorded

    mlflow.set_tracking_uri(config.tracking.uri)
    runs = mlflow.search_runs(experiment_names=["medssl"], output_format="list")
    parent = next(r for r in runs if r.info.run_name == "pipeline")
    children = {r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(STAGES) <= children

    again = run_workflow(config, QUIET)
    assert all(outcome.startswith("skipped") for outcome in again.outcome.values()), again.outcome

    forced = run_workflow(config, QUIET, force=["finetune"])
    assert forced.outcome["finetune"] == "ran" and forced.outcome["evaluate"] == "ran"  # a new detector version
    assert forced.outcome["pretrain"].startswith("skipped") and forced.outcome["curve"].startswith("skipped")
    assert forced.outputs["finetune.detector"] == "models:/medssl-detector/2"


def test_run_names_what_it_needs(tmp_path, dask_scheduler):
    config = _config(tmp_path, dask_scheduler)
    with pytest.raises(WorkflowError, match="no stage train"):
        run_workflow(config, QUIET, force=["train"])
    with pytest.raises(WorkflowError, match="ingest always redoes what is new or changed"):
        run_workflow(config, QUIET, force=["ingest"])
    bare = config.model_copy(update={"evaluate": config.evaluate.model_copy(update={"labels": None})})
    with pytest.raises(WorkflowError, match=r"evaluate\.labels"):
        run_workflow(bare, QUIET)


def test_without_tracking_a_new_detector_file_is_evaluated_again(tmp_path, dask_scheduler):
    """With tracking off the detector is a file at a fixed path: after a finetune with other settings the
    file holds other weights, and evaluate must see that (it keys on the file's digest, not its name)."""
    config = _config(tmp_path, dask_scheduler)
    config = config.model_copy(
        update={
            "tracking": config.tracking.model_copy(update={"enabled": False}),
            "curve": config.curve.model_copy(update={"budgets": []}),
        }
    )
    first = run_workflow(config, QUIET)
    assert first.outcome["finetune"] == "ran" and first.outcome["evaluate"] == "ran"
    fewer = config.model_copy(update={"finetune": config.finetune.model_copy(update={"budget": "4shot"})})
    second = run_workflow(fewer, QUIET)
    assert second.outcome["pretrain"].startswith("skipped") and second.outcome["finetune"] == "ran"
    assert second.outcome["evaluate"] == "ran", second.outcome


def test_pretraining_holds_out_an_evaluation_set_of_one_class_too(pneumonia_manifest, tmp_path, dask_scheduler):
    """A held-out set of normal scans only (say, to check false alarms) is still a set models are judged
    on: none of its scans may reach pretraining."""
    table = pd.read_csv(PNEUMONIA / "val" / "labels.csv")
    normals = [str(PNEUMONIA / "val" / p) for p in table.path[table.label == 0]]
    pd.DataFrame({"path": normals, "label": 0}).to_csv(tmp_path / "normals.csv", index=False)
    config = _config(tmp_path, dask_scheduler)
    evaluate = config.evaluate.model_copy(update={"labels": tmp_path / "normals.csv"})
    steps = Steps(config.model_copy(update={"evaluate": evaluate}), QUIET, tmp_path)
    held = excluded_scans(pneumonia_manifest, steps.pretrain_config(pneumonia_manifest).exclude, TEST_KEY, QUIET)
    assert {image_key(TEST_KEY.encode(), p) for p in normals} <= held
