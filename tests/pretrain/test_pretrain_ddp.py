"""DistributedDataParallel for real: torchrun starts two CPU processes (Gloo) that pretrain together."""

from __future__ import annotations

import os
import subprocess

import mlflow
import pytest
import torch
from conftest import ROOT

pytestmark = pytest.mark.slow  # torchrun with two processes


def test_torchrun_two_processes_train_one_encoder(sample_manifest, tmp_path):
    ingested, _ = sample_manifest
    config = tmp_path / "ddp.yaml"
    config.write_text(
        "pretrain:\n  size: 32\n  epochs: 2\n  batch_size: 8\n  warmup_epochs: 1\n  slices_per_volume: 1\n"
        "  encoder: {widths: [8, 16, 32, 64], layers: [1, 1, 1, 1]}\n"
        "  options: {simclr: {proj_hidden: 32, proj_dim: 16}}\n  monitor: {every: 0}\n"
    )
    store = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": store}
    cmd = [str(ROOT / ".venv/bin/torchrun"), "--standalone", "--nproc_per_node", "2", str(ROOT / ".venv/bin/medssl")]
    cmd += ["pretrain", "--manifest", str(ingested / "manifest.parquet"), "--out", str(tmp_path / "out")]
    cmd += ["--method", "simclr", "--device", "cpu", "--config", str(config), "--name", "ddp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["medssl"])
    assert len(runs) == 1  # rank 0 alone talks to MLflow
    history = mlflow.MlflowClient().get_metric_history(runs.run_id[0], "images_per_s")
    assert [m.step for m in history] == [1, 2]
    state = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2
    assert mlflow.pytorch.load_model("models:/ddp-encoder@simclr")(torch.rand(2, 1, 32, 32)).shape == (2, 64)

    # Other settings over the same folder: the old checkpoint is set aside once (by rank 0; the other rank
    # waits for it) and both ranks start over together.
    (tmp_path / "out" / "pretrain.json").unlink()
    config.write_text(config.read_text() + "  lr: 0.01\n")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "out").glob("checkpoint-*.pt"))) == 1
    assert torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["epoch"] == 2
