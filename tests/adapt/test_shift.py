"""The shift report on real chest X-rays: adult (NIH) against pediatric (PneumoniaMNIST), and the null case."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import TINY_ENCODER
from rich.console import Console

from pipeline.adapt.shift import mmd_test, parse_side, read_side, run_shift
from pipeline.config import load_config
from pipeline.errors import DataError

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115


def _config(reference: str, target: str, out: Path, store: str | None = None):
    return load_config(
        None,
        {
            "shift.reference": reference,
            "shift.target": target,
            "shift.out": str(out),
            "shift.permutations": 200,
            "pretrain.size": 32,
            "pretrain.encoder": TINY_ENCODER,
            "tracking.enabled": store is not None,
            "tracking.uri": store,
        },
    )


def test_adult_against_pediatric_is_flagged_and_logged(adult_manifest, pneumonia_manifest, tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    result = run_shift(_config(f"{adult_manifest}:nih", str(pneumonia_manifest), tmp_path / "shift", store), QUIET)
    assert result.shifted and result.mmd_p < 0.01
    assert result.domain_auroc > 0.9
    assert result.scans == (24, 160)
    report = json.loads((tmp_path / "shift" / "shift.json").read_text())
    assert report["mmd_p"] == result.mmd_p and report["target_digest"] == result.target_digest
    assert set(report["metadata"]["intensity"]) == {"mean", "sd", "p1", "p99"}
    assert (tmp_path / "shift" / "shift.png").stat().st_size > 0
    mlflow.set_tracking_uri(store)
    run = mlflow.search_runs(experiment_names=["medssl"], output_format="list")[0]
    assert run.data.metrics["mmd_p"] == pytest.approx(result.mmd_p)
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"shift.json", "shift.png"} <= logged


def test_two_random_halves_of_one_site_are_not_flagged(pneumonia_manifest, tmp_path):
    side = str(pneumonia_manifest)
    result = run_shift(_config(side, side, tmp_path / "null"), QUIET)
    assert not result.shifted and result.mmd_p > 0.05
    assert result.domain_auroc < 0.7
    assert result.scans == (80, 80) and result.ks_significant == 0


def test_a_side_names_a_site_and_an_unknown_site_is_a_clear_error(adult_manifest):
    assert parse_side(f"{adult_manifest}:nih") == (adult_manifest, "nih")
    assert parse_side(str(adult_manifest)) == (adult_manifest, None)
    assert len({it["scan"] for it in read_side(f"{adult_manifest}:nih", 2, 0).rows}) == 24
    with pytest.raises(DataError, match="no accepted scans of site 'other' \\(sites: nih\\)"):
        read_side(f"{adult_manifest}:other", 2, 0)


def test_mmd_p_value_is_small_for_shifted_samples_only():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    assert mmd_test(x, y, 300, 0)[1] > 0.05
    assert mmd_test(x, y + 0.8, 300, 0)[1] < 0.01
