"""The command line: --help everywhere, one clear line for bad input, the summary table at the end."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import ROOT, SAMPLE, TEST_KEY

pytestmark = pytest.mark.slow  # each case starts the medssl command in a new process

MEDSSL = str(ROOT / ".venv/bin/medssl")


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDSSL_PSEUDONYM_KEY": TEST_KEY, "COLUMNS": "200"}
    return subprocess.run([MEDSSL, *args], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.mark.parametrize("args", [["--help"], ["ingest", "--help"], ["pretrain", "--help"], ["publish", "--help"]])
def test_help(args):
    proc = run(*args)
    assert proc.returncode == 0
    assert "Usage" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "/no/such/folder", "--out", "{tmp}/o"], "source not found: /no/such/folder"),
        (["ingest", str(SAMPLE), "--out", "{tmp}/o", "--tilt", "sideways"], "invalid config at 'ingest.tilt'"),
        (["ingest", str(SAMPLE), "--out", "{tmp}/o", "--labels", "{tmp}/missing.csv"], "unreadable label CSV"),
        (
            ["ingest", str(SAMPLE), "--out", "{tmp}/o", "--scheduler", "tcp://127.0.0.1:9", "--no-tracking"],
            "cannot reach the Dask scheduler",
        ),
        (["pretrain", "--manifest", "{tmp}/missing.parquet", "--no-tracking"], "manifest not found"),
        (["publish", "--scores", "{tmp}/missing.csv", "--no-tracking"], "error (publish): results table not found"),
        (["publish", "--scores", str(SAMPLE / "SOURCES.md"), "--no-tracking"], "error (publish): no PACS to publish"),
        (
            ["publish", "--scores", str(SAMPLE / "SOURCES.md"), "--dicomweb", "http://127.0.0.1:9/dicom-web"],
            "SOURCES.md: not a readable results table",
        ),
        (["pretrain", "--manifest", str(SAMPLE / "SOURCES.md"), "--no-tracking"], "not a readable manifest"),
        (["pretrain", "--manifest", "{tmp}/m.parquet", "--method", "byol"], "invalid config at 'pretrain.method'"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    proc = run(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_ingest_prints_summary_and_reruns_cheaply(tmp_path, dask_scheduler):
    args = [
        "ingest",
        str(SAMPLE / "cxr_nih1000"),
        "--out",
        str(tmp_path / "o"),
        "--scheduler",
        dask_scheduler,
        "--labels",
        str(SAMPLE / "cxr_nih1000/labels.csv"),
        "--no-tracking",
    ]
    first = run(*args)
    assert first.returncode == 0, first.stderr
    assert "accepted" in first.stderr and "24" in first.stderr and "files/s" in first.stderr
    second = run(*args)
    assert "Nothing new to convert: all 24 series/images are up to date." in second.stderr, second.stderr


def test_a_model_the_registry_lacks_is_one_clear_line(tmp_path):
    model = "models:/nope-detector@champion"  # models:/x/3 takes the same road (tests/score/test_score.py)
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nx.png,0\n")
    env = {**os.environ, "MEDSSL_PSEUDONYM_KEY": TEST_KEY, "COLUMNS": "200"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["evaluate", "--model", model, "--labels", str(labels), "--out", str(tmp_path / "e"), "--no-tracking"]
    proc = subprocess.run([MEDSSL, *args], capture_output=True, text=True, env=env)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith(("error", "Traceback"))]  # MLflow's INFO aside
    assert proc.returncode == 2 and len(errors) == 1 and f"model not found: {model}" in errors[0], proc.stderr
