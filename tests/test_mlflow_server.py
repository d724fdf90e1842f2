"""Tracking to a real MLflow server by URI, not only to the default sqlite file."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

import mlflow
import pytest
from conftest import ROOT, SAMPLE

pytestmark = pytest.mark.slow  # a real MLflow tracking server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not become healthy in 90 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_ingest_logs_to_a_tracking_server(ingest, mlflow_server):
    result, _ = ingest(SAMPLE / "cxr_nih1000", tracking_uri=mlflow_server)
    client = mlflow.MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("medssl").experiment_id])
    assert run.data.metrics["accepted"] == result.accepted
    assert run.inputs.dataset_inputs[0].dataset.digest == result.dataset_digest
