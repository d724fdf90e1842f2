"""The pretrain stage end to end on the ingested sample: every method registers an encoder that loads back
through MLflow with the same embeddings; a killed run resumes to the uninterrupted result; 3D runs;
missing, cut short or replaced files are skipped with a named reason."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_VIT
from rich.console import Console

import pipeline.pretrain.run as stage
from pipeline.config import load_config
from pipeline.errors import ConfigError, DataError
from pipeline.pretrain.model import learning_rate
from pipeline.pretrain.scans import usable_items

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
TINY = {
    "size": 32,
    "epochs": 2,
    "batch_size": 16,
    "warmup_epochs": 1,
    "slices_per_volume": 2,
    "encoder": {"widths": [8, 16, 32, 64], "layers": [1, 1, 1, 1]},
    "vit": TINY_VIT,
    "options": {
        "simclr": {"proj_hidden": 32, "proj_dim": 16},
        "moco": {"proj_hidden": 32, "proj_dim": 16, "queue_size": 64},
        "dino": {"head_hidden": 32, "bottleneck_dim": 16, "out_dim": 64},
    },
    "monitor": {"every": 1, "k": 5, "query_fraction": 0.34},
}


def _config(manifest: Path, out: Path, tracking: str | None = None, **pretrain):
    overrides = {f"pretrain.{k}": v for k, v in {**TINY, **pretrain}.items()}
    overrides.update(
        {
            "pretrain.manifest": str(manifest),
            "pretrain.out": str(out),
            "tracking.enabled": tracking is not None,
            "tracking.uri": tracking,
        }
    )
    return load_config(None, overrides)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.mark.parametrize("method", ["simclr", "moco", "dino", "mae"])
def test_each_method_registers_an_encoder_that_loads_back(sample_manifest, tmp_path, store, method):
    ingested, manifest = sample_manifest
    cfg = _config(ingested / "manifest.parquet", tmp_path / method, store, method=method)
    result = stage.run_pretrain(cfg, QUIET)

    volumes = sum(1 for r in manifest.itertuples() if len(r.shape) >= 3 and r.shape[2] > 1)
    assert result.items == 24 + 2 * volumes  # 24 chest X-rays and two slices of each volume
    assert np.isfinite(result.loss) and result.knn_auroc is not None and result.images_per_s > 0
    local = torch.load(result.encoder, weights_only=False)
    loaded = mlflow.pytorch.load_model(f"models:/medssl-encoder@{method}")
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(local(images), loaded(images))

    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("medssl-encoder", method)
    assert result.model_uri == f"models:/medssl-encoder/{version.version}"
    assert version.tags["method"] == method and version.tags["spatial_dims"] == "2"
    assert version.tags["dataset_digest"] == result.dataset_digest
    run = client.get_run(result.run_id)
    assert run.data.params["pretrain.method"] == method
    assert {"loss", "lr", "images_per_s", "knn_auroc"} <= set(run.data.metrics)
    assert len(client.get_metric_history(result.run_id, "loss")) == 2
    assert run.inputs.dataset_inputs[0].dataset.name == f"pretrain-{result.dataset_digest}"
    summary = json.loads((result.out / "pretrain.json").read_text())
    assert summary["model_uri"] == result.model_uri and summary["method"] == method


def test_a_killed_run_resumes_to_the_uninterrupted_result(sample_manifest, tmp_path, store, monkeypatch):
    ingested, _ = sample_manifest
    manifest = ingested / "manifest.parquet"
    straight = stage.run_pretrain(_config(manifest, tmp_path / "straight", method="moco", epochs=3), QUIET)

    real_epoch, calls = stage.train_epoch, []

    def dies_in_the_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    killed = _config(manifest, tmp_path / "killed", store, method="moco", epochs=3)
    monkeypatch.setattr(stage, "train_epoch", dies_in_the_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        stage.run_pretrain(killed, QUIET)
    monkeypatch.setattr(stage, "train_epoch", real_epoch)
    # A setting that does not change training may differ on resume (here: the cache's workers); MLflow
    # refuses to change a logged param, so the new value goes to a tag.
    resumed = stage.run_pretrain(
        _config(manifest, tmp_path / "killed", store, method="moco", epochs=3, cache_workers=2), QUIET
    )

    assert resumed.resumed_from == 1 and resumed.loss == straight.loss
    a = torch.load(straight.encoder, weights_only=False).state_dict()
    b = torch.load(resumed.encoder, weights_only=False).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = mlflow.MlflowClient().get_metric_history(resumed.run_id, "loss")
    assert [m.step for m in history] == [1, 2, 3]  # one MLflow run, continued
    run = mlflow.get_run(resumed.run_id).data
    assert run.params["pretrain.cache_workers"] == "1" and run.tags["medssl.resumed.pretrain.cache_workers"] == "2"

    again = stage.run_pretrain(killed, QUIET)
    assert again.skipped and again.model_uri == resumed.model_uri


def test_a_run_killed_before_publishing_publishes_its_last_epochs_figures(sample_manifest, tmp_path, monkeypatch):
    """Killed after the last checkpoint, before the encoder was published: the resumed run has no epoch
    left to train and must still report the loss and kNN AUROC of the run, not NaN and nothing."""
    ingested, _ = sample_manifest
    config = _config(ingested / "manifest.parquet", tmp_path, method="simclr", epochs=2)
    publish = stage._publish

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "_publish", killed)
    with pytest.raises(KeyboardInterrupt):
        stage.run_pretrain(config, QUIET)
    monkeypatch.setattr(stage, "_publish", publish)
    resumed = stage.run_pretrain(config, QUIET)
    assert resumed.resumed_from == 2 and np.isfinite(resumed.loss) and resumed.knn_auroc is not None
    assert json.loads((tmp_path / "pretrain.json").read_text())["loss"] == resumed.loss


def test_a_run_finished_without_tracking_is_registered_when_tracking_comes_on(sample_manifest, tmp_path):
    """Not trained again, and not found done either: published from its last checkpoint."""
    ingested, _ = sample_manifest
    manifest, store = ingested / "manifest.parquet", f"sqlite:///{tmp_path}/mlflow.db"
    plain = {"method": "simclr", "epochs": 1, "monitor": {"every": 0}}
    assert stage.run_pretrain(_config(manifest, tmp_path / "out", **plain), QUIET).model_uri is None
    tracked = stage.run_pretrain(_config(manifest, tmp_path / "out", store, **plain), QUIET)
    assert tracked.resumed_from == 1 and tracked.model_uri == "models:/medssl-encoder/1"
    assert stage.run_pretrain(_config(manifest, tmp_path / "out", store, **plain), QUIET).skipped


def test_changed_settings_start_over_and_keep_the_old_checkpoint(sample_manifest, tmp_path):
    ingested, _ = sample_manifest
    manifest = ingested / "manifest.parquet"
    stage.run_pretrain(_config(manifest, tmp_path, method="simclr", epochs=1), QUIET)
    result = stage.run_pretrain(_config(manifest, tmp_path, method="simclr", epochs=1, lr=0.01), QUIET)
    assert not result.skipped and result.resumed_from == 0
    assert len(list(tmp_path.glob("checkpoint-*.pt"))) == 1


def test_3d_patches_of_the_ingested_volumes(sample_manifest, tmp_path, store):
    ingested, manifest = sample_manifest
    cfg = _config(
        ingested / "manifest.parquet", tmp_path, store, method="simclr", spatial_dims=3, size=16, volume_side=32
    )
    cfg.pretrain.batch_size = 4
    result = stage.run_pretrain(cfg, QUIET)
    volumes = sum(1 for r in manifest.itertuples() if len(r.shape) >= 3 and r.shape[2] > 1)
    assert result.items == volumes and np.isfinite(result.loss)
    assert result.knn_auroc is None  # the sample's volumes carry no labels: the monitor is off
    version = mlflow.MlflowClient().get_model_version("medssl-encoder", result.model_uri.rsplit("/", 1)[1])
    assert version.tags["spatial_dims"] == "3"
    encoder = mlflow.pytorch.load_model(result.model_uri)
    assert encoder(torch.rand(2, 1, 16, 16, 16)).shape == (2, 64)


def test_bad_inputs_are_named(sample_manifest, tmp_path):
    ingested, _ = sample_manifest
    with pytest.raises(DataError, match="manifest not found"):
        stage.run_pretrain(_config(tmp_path / "none.parquet", tmp_path), QUIET)
    with pytest.raises(ConfigError, match=r"pretrain\.options\.moco\.x"):  # an option the class does not take
        _config(ingested / "manifest.parquet", tmp_path, method="moco", options={"moco": {"x": 1}})
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        _config(ingested / "manifest.parquet", tmp_path, method="mae", size=30)


def test_learning_rate_warms_up_then_decays_to_zero():
    rates = [learning_rate(step, 100, 10, 1e-3) for step in range(100)]
    assert rates[9] == pytest.approx(1e-3) and rates[0] == pytest.approx(1e-4)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:])) and rates[-1] < 1e-6


def _damage(ingested: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the ingested sample with three 2D images broken three ways: {output_path: expected reason}."""
    copy = tmp_path / "ingested"
    shutil.copytree(ingested, copy, ignore=shutil.ignore_patterns("pretrain*", "mlruns"))
    rows = pd.read_parquet(copy / "manifest.parquet").query("status == 'accepted'")
    flat = rows[rows["shape"].map(lambda s: len(s) < 3 or s[2] == 1)]
    gone, cut, swapped, donor = flat.output_path.iloc[:4]
    (copy / gone).unlink()
    data = (copy / cut).read_bytes()
    (copy / cut).write_bytes(data[: len(data) // 2])
    shutil.copyfile(copy / donor, copy / swapped)  # a readable NIfTI, but not the voxels ingest wrote there
    return copy, {gone: "MISSING_FILE", cut: "CORRUPT_FILE", swapped: "CHECKSUM_MISMATCH"}


def test_unusable_files_are_skipped_with_a_named_reason_and_the_run_goes_on(sample_manifest, tmp_path, store):
    ingested, _ = sample_manifest
    intact = usable_items(ingested / "manifest.parquet", _config(ingested, tmp_path).pretrain, QUIET, "x")[0]
    copy, expected = _damage(ingested, tmp_path)
    result = stage.run_pretrain(_config(copy / "manifest.parquet", tmp_path / "out", store, epochs=1), QUIET)
    assert result.items == len(intact) - 3 and np.isfinite(result.loss)
    assert result.files_skipped == {"MISSING_FILE": 1, "CORRUPT_FILE": 1, "CHECKSUM_MISMATCH": 1}
    listed = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert dict(zip(listed.path, listed.reason, strict=True)) == expected
    run = mlflow.get_run(result.run_id)
    assert "skipped.csv" in {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id)}
    assert mlflow.MlflowClient().get_metric_history(result.run_id, "files_skipped")[0].value == 3
    assert run.data.tags["medssl.dataset_digest"] == result.dataset_digest


def test_a_manifest_with_no_usable_file_names_the_reasons(sample_manifest, tmp_path):
    ingested, _ = sample_manifest
    copy = tmp_path / "ingested"
    shutil.copytree(ingested, copy, ignore=shutil.ignore_patterns("pretrain*", "mlruns", "volumes"))
    with pytest.raises(DataError, match=r"no usable images or volumes .*'MISSING_FILE': \d+"):
        stage.run_pretrain(_config(copy / "manifest.parquet", tmp_path / "out"), QUIET)


@pytest.mark.slow  # three pretraining runs through the registry
def test_a_run_from_an_alias_trains_again_once_the_alias_moves(sample_manifest, tmp_path):
    """Continued pretraining from ``models:/…@alias`` is keyed on the version the alias named, not its text:
    the same reference to a new version is another run, and the lineage names the version it started from."""
    ingested, _ = sample_manifest
    store = f"sqlite:///{tmp_path}/mlflow.db"
    manifest = ingested / "manifest.parquet"
    plain = {"epochs": 1, "monitor": {"every": 0}}
    for version in ("v1", "v2"):  # two versions of the source encoder; @simclr ends on the second
        stage.run_pretrain(_config(manifest, tmp_path / version, store, name="source", **plain), QUIET)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias("source-encoder", "simclr", "1")
    cfg = _config(manifest, tmp_path / "continued", store, init="models:/source-encoder@simclr", **plain)
    first = stage.run_pretrain(cfg, QUIET)
    assert not first.skipped and stage.run_pretrain(cfg, QUIET).skipped  # same version: nothing to redo
    assert client.get_model_version_by_alias("medssl-encoder", "simclr-adapted").tags["adapted_from"] == (
        "models:/source-encoder/1"
    )
    client.set_registered_model_alias("source-encoder", "simclr", "2")
    again = stage.run_pretrain(cfg, QUIET)
    assert not again.skipped
    assert client.get_model_version_by_alias("medssl-encoder", "simclr-adapted").tags["adapted_from"] == (
        "models:/source-encoder/2"
    )
