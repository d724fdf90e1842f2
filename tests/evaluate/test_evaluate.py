"""evaluate and promote on real chest X-rays: metrics with intervals, scores and a ROC figure for images the
detector never saw (unscorable rows named, not dropped); the champion alias moves only to a better model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import PNEUMONIA, SAMPLE, TEST_KEY, finetune_config
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from rich.console import Console

import pipeline.promote.run as promote
from pipeline.config import load_config
from pipeline.errors import EvaluateError, PromoteError
from pipeline.evaluate import run_evaluate
from pipeline.evaluate.metrics import bootstrap, point_metrics, sensitivity_at
from pipeline.finetune import run_finetune
from pipeline.intervals import paired_difference
from pipeline.promote import run_promote
from pipeline.promote.run import decide
from pipeline.registry.store import alias_version

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
VAL = PNEUMONIA / "val" / "labels.csv"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="module")
def detector(pneumonia_manifest, store, tmp_path_factory) -> str:
    """A linear probe on an untrained tiny encoder with 16 labels per class: registered, challenger."""
    cfg = finetune_config(pneumonia_manifest, tmp_path_factory.mktemp("ft"), store, budget="16shot", seeds=1)
    return run_finetune(cfg, QUIET).model_uri


def _evaluate_config(store: str, model: str, labels: Path, out: Path, **extra):
    overrides = {
        "evaluate.model": model,
        "evaluate.labels": str(labels),
        "evaluate.out": str(out),
        "evaluate.bootstrap": 200,
        "ingest.pseudonym_key": TEST_KEY,
        "dask.workers": 1,
        "tracking.uri": store,
        **extra,
    }
    return load_config(None, overrides)


def test_evaluate_writes_metrics_with_intervals_scores_and_a_roc_figure(detector, store, tmp_path):
    labels = pd.read_csv(VAL)
    labels["path"] = [str(PNEUMONIA / "val" / p) for p in labels.path]
    (tmp_path / "notes.txt").write_text("not an image")
    extra = pd.DataFrame({"path": [str(tmp_path / "gone.png"), str(tmp_path / "notes.txt")], "label": [1, 0]})
    csv = tmp_path / "labels.csv"
    pd.concat([labels, extra]).to_csv(csv, index=False)

    result = run_evaluate(_evaluate_config(store, detector, csv, tmp_path / "eval"), QUIET)
    assert (result.scans, result.normal, result.abnormal) == (60, 30, 30)
    assert sum(result.not_scored.values()) == 2 and "NOT_AN_IMAGE" in result.not_scored
    auroc = result.metrics["auroc"]
    assert auroc["value"] > 0.7 and auroc["ci_low"] <= auroc["value"] <= auroc["ci_high"]
    assert set(result.metrics) == {"auroc", "auprc", "sensitivity_at_90_specificity", "sensitivity_at_95_specificity"}

    scores = pd.read_csv(tmp_path / "eval" / "scores.csv")
    assert len(scores) == 60 and set(scores.label) == {0, 1}
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]["auroc"] == auroc
    assert (tmp_path / "eval" / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = mlflow.MlflowClient()
    assert client.get_run(result.run_id).data.metrics["auroc"] == pytest.approx(auroc["value"])
    logged = {a.path for a in client.list_artifacts(result.run_id)}
    assert logged == {"metrics.json", "roc.png"}  # scores.csv holds the user's paths: it stays local

    # The same scans named by series_key (as a review export names them), read from the manifest they were
    # ingested into: the same scores; a key the manifest lacks is named, not dropped.
    ingested = tmp_path / "eval" / "ingested" / "manifest.parquet"
    rows = pd.read_parquet(ingested)
    named = rows[(rows.status == "accepted") & rows.label.notna()]
    keyed = tmp_path / "keyed.csv"
    pd.DataFrame({"series_key": [*named.series_key, "0" * 16], "label": [*named.label.astype(int), 1]}).to_csv(
        keyed, index=False
    )
    with pytest.raises(EvaluateError, match="names scans by series_key: pass --manifest"):
        run_evaluate(_evaluate_config(store, detector, keyed, tmp_path / "by-key"), QUIET)
    by_key = run_evaluate(
        _evaluate_config(store, detector, keyed, tmp_path / "by-key", **{"evaluate.manifest": str(ingested)}), QUIET
    )
    assert by_key.scans == 60 and by_key.not_scored == {"NOT_INGESTED": 1}
    assert by_key.metrics["auroc"]["value"] == pytest.approx(auroc["value"])
    assert list(pd.read_csv(tmp_path / "by-key" / "scores.csv").columns) == ["series_key", "label", "score"]


def test_metrics_on_a_known_ranking():
    labels = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.85, 0.99, 0.97, 0.3])
    # At specificity >= 0.9 one normal may score above the threshold: 0.99, 0.97 (and 0.95 normal) -> 2/4.
    assert sensitivity_at(labels, scores, 0.90) == 0.5
    assert point_metrics(labels, scores)["auroc"] == pytest.approx((8 + 10 + 10 + 2.5) / 40)  # the 0.3 tie counts half
    ci = bootstrap(labels, scores, resamples=300, seed=1)["auroc"]
    assert ci["ci_low"] < ci["value"] < ci["ci_high"]
    with pytest.raises(ValueError, match=r"normal .* and abnormal"):
        bootstrap(np.zeros(4), np.arange(4.0))


def test_sensitivity_at_a_specificity_reached_inside_a_run_of_ties():
    """Ten clear abnormal scans, then ten steps each holding one normal and one abnormal scan on one score:
    the curve runs straight through (0.05, 0.55), (0.1, 0.6), ... and 90 % specificity is reached at 0.6."""
    clear = [(1, 100.0 - i) for i in range(10)]
    tied = [(label, 50.0 - i) for i in range(10) for label in (0, 1)]
    rest = [(0, float(-i)) for i in range(10)]
    labels, scores = (np.array(v) for v in zip(*(clear + tied + rest), strict=True))
    assert sensitivity_at(labels, scores, 0.90) == pytest.approx(0.6)
    assert sensitivity_at(labels, scores, 0.95) == pytest.approx(0.55)


def _register(manifest: Path, store: str, out: Path, name: str, labels: Path = PNEUMONIA / "train" / "labels.csv"):
    """A 16-shot linear probe registered as ``<name>-detector@challenger``."""
    cfg = finetune_config(manifest, out, store, labels=str(labels), seeds=1, budget="16shot", name=name)
    return run_finetune(cfg, QUIET)


def _promote_config(store: str, name: str, out: Path):
    settings = {"promote.name": name, "promote.labels": str(VAL), "promote.out": str(out / "p")}
    return _evaluate_config(store, "unused", VAL, out, **settings)


def _decision(out: Path) -> dict:
    """decision.json, read as strict JSON (a bare NaN is not JSON to most readers)."""
    return json.loads((out / "p" / "decision.json").read_text(), parse_constant=lambda c: pytest.fail(c))


@pytest.mark.slow  # registers and evaluates several detectors
def test_the_first_challenger_becomes_champion_and_a_worse_one_is_refused(pneumonia_manifest, store, tmp_path):
    name = "gate-detector"
    cfg = _promote_config(store, name, tmp_path)
    with pytest.raises(PromoteError, match="no gate-detector@challenger"):
        run_promote(cfg, QUIET)

    def register(labels: Path, tag: str) -> None:
        _register(pneumonia_manifest, store, tmp_path / tag, "gate", labels)

    register(PNEUMONIA / "train" / "labels.csv", "good")
    first = run_promote(cfg, QUIET)
    assert first.promoted and first.champion_version is None and "first" in first.reason
    again = run_promote(cfg, QUIET)  # nothing new: refused, and decision.json says so (not the last decision)
    assert not again.promoted and "already the champion" in again.reason
    assert _decision(tmp_path)["reason"] == again.reason

    flipped = pd.read_csv(PNEUMONIA / "train" / "labels.csv")
    flipped["path"] = [str(PNEUMONIA / "train" / p) for p in flipped.path]
    flipped["label"] = 1 - flipped.label  # trained to call pneumonia normal: a worse model by construction
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    register(tmp_path / "flipped.csv", "bad")
    second = run_promote(cfg, QUIET)
    assert not second.promoted and second.challenger_auroc < second.champion_auroc
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(name, "champion").version) == first.challenger_version
    decision = _decision(tmp_path)
    assert decision["promoted"] is False and decision["challenger_version"] == second.challenger_version


def test_only_an_absent_alias_reads_as_no_champion(pneumonia_manifest, store, tmp_path, monkeypatch):
    """promote takes None for "no champion yet" and promotes unseen: a registry that does not answer must raise."""
    tracking = _promote_config(store, "absent-detector", tmp_path).tracking
    assert alias_version("never-registered", "champion", tracking) is None
    _register(pneumonia_manifest, store, tmp_path / "good", "absent")
    assert alias_version("absent-detector", "champion", tracking) is None
    assert alias_version("absent-detector", "challenger", tracking) == "1"

    def busy(self, *args):
        raise MlflowException("registry busy", error_code=TEMPORARILY_UNAVAILABLE)

    for method in ("get_registered_model", "get_model_version_by_alias"):
        monkeypatch.setattr(mlflow.MlflowClient, method, busy)
    with pytest.raises(MlflowException, match="registry busy"):
        alias_version("absent-detector", "champion", tracking)


def test_a_promote_killed_after_its_decision_decides_the_same_again(pneumonia_manifest, store, tmp_path, monkeypatch):
    _register(pneumonia_manifest, store, tmp_path / "good", "killed")
    cfg = _promote_config(store, "killed-detector", tmp_path)

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(promote, "set_alias", killed)
    with pytest.raises(KeyboardInterrupt):
        run_promote(cfg, QUIET)
    monkeypatch.undo()
    assert _decision(tmp_path)["promoted"] is True  # written before the alias move, which did not happen
    assert run_promote(cfg, QUIET).promoted
    assert _decision(tmp_path)["promoted"] is True and _decision(tmp_path)["champion_version"] is None


@pytest.mark.slow  # registers and evaluates several detectors
def test_a_champion_moved_during_the_evaluation_is_not_overwritten(pneumonia_manifest, store, tmp_path, monkeypatch):
    name = "raced-detector"
    _register(pneumonia_manifest, store, tmp_path / "v1", "raced")
    cfg = _promote_config(store, name, tmp_path)
    assert run_promote(cfg, QUIET).promoted  # v1, the first champion
    for tag in ("v2", "v3"):
        _register(pneumonia_manifest, store, tmp_path / tag, "raced")  # v3 ends up as the challenger
    client = mlflow.MlflowClient()
    evaluate = promote._evaluated

    def and_another_promote_moves_the_champion(config, name_, version, out, console):
        client.set_registered_model_alias(name, "champion", "2")
        return evaluate(config, name_, version, out, console)

    monkeypatch.setattr(promote, "_evaluated", and_another_promote_moves_the_champion)
    clear_win = {"difference": 0.5, "ci_low": 0.4, "ci_high": 0.6, "scans": 60}  # v3 would be promoted
    monkeypatch.setattr(promote, "compare", lambda *args: clear_win)
    result = run_promote(cfg, QUIET)
    assert not result.promoted and "moved to version 2" in result.reason
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"


def test_the_lower_bound_of_the_paired_interval_decides():
    assert decide(None, 0.0)[0]  # no champion yet
    assert decide({"difference": 0.05, "ci_low": 0.011, "ci_high": 0.09, "scans": 60}, 0.01)[0]
    refused, reason = decide({"difference": 0.05, "ci_low": -0.01, "ci_high": 0.11, "scans": 60}, 0.0)
    assert not refused and "+0.0500 (paired 95 % CI -0.0100 to +0.1100, 60 scans)" in reason


def test_the_paired_interval_sees_a_difference_two_single_intervals_miss():
    """Two detectors that rank 60 scans alike but one pair apart: each AUROC alone is uncertain by about
    0.05, the difference on the same scans is certain; and a model against itself differs by nothing."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(30, int), np.ones(30, int)]
    champion = labels + rng.normal(0, 0.8, 60)  # AUROC about 0.8
    challenger = champion.copy()
    challenger[labels == 1] += 0.3  # the same ranking, every abnormal scan a little higher
    paired = paired_difference(labels, challenger, champion, 1000, 0)
    alone = [bootstrap(labels, s, 1000, 0)["auroc"] for s in (challenger, champion)]
    assert paired["difference"] > 0 and paired["ci_low"] > 0
    assert alone[0]["ci_low"] < alone[1]["value"]  # the challenger's own interval overlaps the champion's AUROC
    same = paired_difference(labels, champion, champion, 200, 0)
    assert same == {"difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "scans": 60}


def test_dicom_series_named_by_a_file_or_a_folder_are_scored_too(detector, store, tmp_path):
    """A label CSV may name a DICOM file or a series folder: ingest labels that series, evaluate scores its
    slices (the mean) and writes the score against the path as the CSV gave it."""
    labels = pd.read_csv(VAL)
    labels["path"] = [str(PNEUMONIA / "val" / p) for p in labels.path]
    dicom = {
        str(SAMPLE / "dcm_qa_ts" / "In" / "1.dcm"): 1,  # one file: a Siemens mosaic, one series
        str(SAMPLE / "dicom2nifti_testdata" / "generic" / "anatomical" / "001"): 0,  # a series folder
    }
    csv = tmp_path / "labels.csv"
    pd.concat([labels, pd.DataFrame({"path": list(dicom), "label": list(dicom.values())})]).to_csv(csv, index=False)
    result = run_evaluate(_evaluate_config(store, detector, csv, tmp_path / "eval"), QUIET)
    assert result.scans == 62 and not result.not_scored
    scores = pd.read_csv(tmp_path / "eval" / "scores.csv").set_index("path")
    for path, label in dicom.items():
        assert scores.label[path] == label and np.isfinite(scores.score[path])
    manifest = pd.read_parquet(tmp_path / "eval" / "ingested" / "manifest.parquet")
    dicom_rows = manifest[(manifest.kind == "dicom") & manifest.label.notna()]
    assert len(dicom_rows) == 2 and dicom_rows.label_key.str.len().gt(0).all()
