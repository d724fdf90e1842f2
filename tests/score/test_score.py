"""The champion scores newly ingested chest X-rays once per model version; the results table only grows."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
import torch
from conftest import finetune_config
from rich.console import Console

from pipeline.config import load_config
from pipeline.errors import RegistryError, ScoreError
from pipeline.finetune import run_finetune
from pipeline.registry.store import set_alias
from pipeline.score import run_score
from pipeline.score.run import COLUMNS

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115


def _score(store, manifest, out, model="models:/medssl-detector@champion", threshold=None):
    overrides = {"score.model": model, "score.manifest": str(manifest), "score.out": str(out), "tracking.uri": store}
    overrides |= {"score.threshold": threshold, "tracking.enabled": store is not None}
    return run_score(load_config(None, overrides), QUIET)


@pytest.mark.slow  # registers and scores with two versions
def test_the_champion_scores_each_series_once_per_version(pneumonia_manifest, tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    # A copy of the ingested sample, so one file can go missing without touching the shared fixture.
    ingested = tmp_path / "ingested"
    shutil.copytree(pneumonia_manifest.parent, ingested)
    manifest = ingested / "manifest.parquet"
    cfg = finetune_config(manifest, tmp_path / "ft", store, budget="16shot", seeds=1)
    first = run_finetune(cfg, QUIET)
    tracking = load_config(None, {"tracking.uri": store}).tracking
    set_alias("medssl-detector", "champion", first.model_uri.rsplit("/", 1)[1], tracking)
    rows = pd.read_parquet(manifest)
    (ingested / rows.output_path[0]).unlink()

    out = tmp_path / "scores.csv"
    night1 = _score(store, manifest, out)
    assert (night1.version, night1.scored, night1.not_scored, night1.already_scored) == ("1", 159, 1, 0)
    table = pd.read_csv(out, dtype={"version": str})
    assert list(table.columns) == COLUMNS and len(table) == 159
    assert set(table.decision) <= {"normal", "abnormal"} and night1.flagged == (table.decision == "abnormal").sum()
    assert set(table.series_key) <= set(rows.series_key)  # keyed pseudonyms only: no paths, no names

    night2 = _score(store, manifest, out)
    assert (night2.scored, night2.already_scored) == (0, 159)

    second = run_finetune(cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"seed": 5})}), QUIET)
    set_alias("medssl-detector", "champion", second.model_uri.rsplit("/", 1)[1], tracking)
    night3 = _score(store, manifest, out)
    assert night3.version == "2" and night3.scored == 159
    assert len(pd.read_csv(out)) == 2 * 159


def test_an_unknown_alias_or_version_is_a_clear_error(pneumonia_manifest, tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(RegistryError, match="no such registered model or alias"):
        _score(store, pneumonia_manifest, tmp_path / "s.csv", "models:/nothing@champion")
    with pytest.raises(RegistryError, match="model not found: models:/nothing/3"):
        _score(store, pneumonia_manifest, tmp_path / "s.csv", "models:/nothing/3")


def test_series_keys_that_look_like_numbers_are_kept_as_written(pneumonia_manifest, tmp_path):
    """A day whose keys all parse as numbers (a one-series day: about one in a thousand) must not be read
    back as numbers, which drops a leading zero or turns 1e5-like keys into floats, and so scores it again."""
    store = f"sqlite:///{tmp_path}/mlflow.db"
    ingested = tmp_path / "ingested"
    shutil.copytree(pneumonia_manifest.parent, ingested)
    rows = pd.read_parquet(ingested / "manifest.parquet")
    day = rows[rows.status == "accepted"].head(2).assign(series_key=["0123456789012345", "1234567e89012345"])
    day.to_parquet(ingested / "day.parquet")
    first = run_finetune(finetune_config(ingested / "manifest.parquet", tmp_path / "ft", store, seeds=1), QUIET)
    set_alias(
        "medssl-detector",
        "champion",
        first.model_uri.rsplit("/", 1)[1],
        load_config(None, {"tracking.uri": store}).tracking,
    )
    out = tmp_path / "scores.csv"
    assert _score(store, ingested / "day.parquet", out).scored == 2
    again = _score(store, ingested / "day.parquet", out)
    assert (again.scored, again.already_scored) == (0, 2)
    assert sorted(pd.read_csv(out, dtype=str).series_key) == ["0123456789012345", "1234567e89012345"]


def test_the_detector_flags_at_its_own_operating_point_unless_told_otherwise(pneumonia_manifest, tmp_path):
    """finetune picks the threshold on its validation part at the target specificity and stores it with the
    detector; score flags at it, a given threshold wins, and a one-class detector without one is refused."""
    cfg = finetune_config(pneumonia_manifest, tmp_path / "ft", budget="16shot", seeds=1, target_specificity=0.8)
    done = run_finetune(cfg, QUIET)
    point = done.operating_point
    assert point is not None and point["specificity"] >= 0.8 and 0 <= point["sensitivity"] <= 1
    scores = tmp_path / "scores.csv"
    own = _score(None, pneumonia_manifest, scores, model=str(done.detector))
    table = pd.read_csv(scores)
    assert own.threshold == point["threshold"] and set(table.threshold) == {point["threshold"]}
    assert (table.decision == "abnormal").tolist() == (table.score >= point["threshold"]).tolist()
    given = _score(None, pneumonia_manifest, tmp_path / "given.csv", model=str(done.detector), threshold=1e9)
    assert given.threshold == 1e9 and given.flagged == 0
    bank = run_finetune(finetune_config(pneumonia_manifest, tmp_path / "oc", mode="oneclass", seeds=1), QUIET)
    torch.save(_without_point(torch.load(bank.detector, weights_only=False)), tmp_path / "bank.pt")
    with pytest.raises(ScoreError, match="one-class detector has no operating point: give --threshold"):
        _score(None, pneumonia_manifest, tmp_path / "bank.csv", model=str(tmp_path / "bank.pt"))


def _without_point(detector):
    """A detector as those registered before operating points were stored."""
    del detector.operating_point
    return detector
