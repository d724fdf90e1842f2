"""Adapting a pediatric chest X-ray detector to adult X-rays without their labels, and the promotion gate.

AdaBN touches BatchNorm statistics only, TENT also their scales and shifts; continued pretraining starts
from the source encoder's weights; ``promote --shift`` refuses an unadapted challenger for a shifted site
and lets one adapted to that site through to the evaluation.
"""

from __future__ import annotations

import json
import os

import mlflow
import pytest
import torch
from conftest import PNEUMONIA, TINY_ENCODER, finetune_config
from rich.console import Console

from models.momentum import MomentumPair
from pipeline.adapt import run_adapt, run_shift
from pipeline.config import load_config
from pipeline.errors import AdaptError
from pipeline.finetune import run_finetune
from pipeline.inference import adapted_to
from pipeline.pretrain.model import build_model, start_from
from pipeline.promote import run_promote
from pipeline.registry.store import load_model

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture(scope="module")
def source(pneumonia_manifest, store, tmp_path_factory):
    """A registered pediatric detector (linear probe, 16 labels per class, tiny untrained encoder)."""
    cfg = finetune_config(pneumonia_manifest, tmp_path_factory.mktemp("ft"), store, budget="16shot", seeds=1)
    return run_finetune(cfg, QUIET)


def _adapt(store, model, target, out, method, **extra):
    overrides = {
        "adapt.model": model,
        "adapt.target": target,
        "adapt.method": method,
        "adapt.out": str(out),
        "adapt.name": "medssl",
        "tracking.uri": store,
        **extra,
    }
    return run_adapt(load_config(None, overrides), QUIET)


def _changed(before: torch.nn.Module, after: torch.nn.Module) -> set[str]:
    a, b = before.state_dict(), after.state_dict()
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_adabn_changes_only_batchnorm_statistics(source, adult_manifest, store, tmp_path):
    result = _adapt(store, str(source.detector), f"{adult_manifest}:nih", tmp_path / "adabn", "adabn")
    before, after = torch.load(source.detector, weights_only=False), torch.load(result.model, weights_only=False)
    changed = _changed(before, after)
    assert changed and all(k.endswith(STATISTICS) for k in changed)
    assert any(k.endswith("running_mean") for k in changed)
    assert adapted_to(after) == result.target_digest and result.scans == 24
    assert result.model_uri == "models:/medssl-detector/2"  # registered after the source, as the challenger


def test_tent_moves_batchnorm_scales_and_shifts_only(source, adult_manifest, store, tmp_path):
    result = _adapt(
        store, str(source.detector), str(adult_manifest), tmp_path / "tent", "tent", **{"adapt.tent_lr": 0.01}
    )
    before, after = torch.load(source.detector, weights_only=False), torch.load(result.model, weights_only=False)
    changed = _changed(before, after)
    assert any(k.endswith("weight") for k in changed)  # BN scales moved
    norms = {n for n, m in after.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert all(k.rsplit(".", 1)[0] in norms for k in changed)  # nothing outside BatchNorm layers


def test_adabn_needs_a_detector_with_batchnorm(adult_manifest, store, tmp_path):
    encoder = build_model(load_config(None, {"pretrain.encoder": TINY_ENCODER, "pretrain.size": 28}).pretrain).encoder
    torch.save(encoder, tmp_path / "encoder.pt")
    with pytest.raises(AdaptError, match="adapts a linear or full detector"):
        _adapt(store, str(tmp_path / "encoder.pt"), str(adult_manifest), tmp_path / "x", "adabn")


def test_continued_pretraining_starts_from_the_source_encoder(
    source, pneumonia_manifest, adult_manifest, store, tmp_path
):
    cfg = load_config(None, {"pretrain.encoder": TINY_ENCODER, "pretrain.size": 28, "pretrain.method": "moco"})
    model = build_model(cfg.pretrain)
    start_from(model, str(source.detector), cfg.tracking)  # a detector's encoder is taken
    detector = torch.load(source.detector, weights_only=False)
    assert not _changed(detector.encoder, model.encoder)
    assert isinstance(model, MomentumPair) and not _changed(model.online, model.target)

    extra = {
        "pretrain.encoder": TINY_ENCODER,
        "pretrain.size": 28,
        "pretrain.method": "moco",
        "pretrain.epochs": 1,
        "pretrain.batch_size": 8,
        "pretrain.options": {"moco": {"queue_size": 16, "proj_hidden": 32, "proj_dim": 16}},
        "pretrain.monitor.every": 0,
    }
    result = _adapt(store, str(source.detector), str(adult_manifest), tmp_path / "ssl", "ssl", **extra)
    encoder, tags = load_model(result.model_uri, load_config(None, {"tracking.uri": store}).tracking)
    assert tags["adapted_from"] == str(source.detector)
    # adapted_to names the target as the shift report does, which is what the promotion gate compares
    shift = {
        "shift.reference": str(pneumonia_manifest),
        "shift.target": str(adult_manifest),
        "shift.out": str(tmp_path / "shift"),
        "shift.permutations": 50,
        "pretrain.encoder": TINY_ENCODER,
        "pretrain.size": 28,
        "tracking.enabled": False,
    }
    assert tags["adapted_to"] == run_shift(load_config(None, shift), QUIET).target_digest
    # its own alias: the archive's encoder keeps @moco
    adapted = mlflow.MlflowClient(store).get_model_version_by_alias("medssl-encoder", "moco-adapted")
    assert result.model_uri == f"models:/medssl-encoder/{adapted.version}"
    assert adapted_to(encoder) == result.target_digest
    assert _changed(detector.encoder, encoder)  # it trained on from there


@pytest.mark.slow  # registers and evaluates three detectors
def test_promotion_gate_refuses_an_unadapted_challenger_for_a_shifted_site(
    source, pneumonia_manifest, adult_manifest, store, tmp_path
):
    shift_cfg = {
        "shift.reference": str(pneumonia_manifest),
        "shift.target": f"{adult_manifest}:nih",
        "shift.out": str(tmp_path / "shift"),
        "shift.permutations": 200,
        "pretrain.encoder": TINY_ENCODER,
        "pretrain.size": 28,
        "tracking.enabled": False,
    }
    report = run_shift(load_config(None, shift_cfg), QUIET)
    assert report.shifted and report.domain_auroc > 0.75

    def promote(out):
        overrides = {
            "promote.name": "gate-detector",
            "promote.labels": str(PNEUMONIA / "val" / "labels.csv"),
            "promote.shift": str(tmp_path / "shift" / "shift.json"),
            "promote.out": str(tmp_path / out),
            "tracking.uri": store,
            "dask.workers": 1,
        }
        return run_promote(load_config(None, overrides), QUIET)

    cfg = finetune_config(pneumonia_manifest, tmp_path / "ft", store, budget="16shot", seeds=1, name="gate")
    unadapted = run_finetune(cfg, QUIET)
    refused = promote("p1")
    assert not refused.promoted and "not adapted" in refused.reason
    assert json.loads((tmp_path / "p1" / "decision.json").read_text())["reason"] == refused.reason

    _adapt(store, unadapted.model_uri, f"{adult_manifest}:nih", tmp_path / "adabn", "adabn", **{"adapt.name": "gate"})
    passed = promote("p2")
    assert passed.promoted and passed.reason.startswith("no champion yet")  # past the gate, then evaluated


def test_batchnorm_statistics_are_not_reset_from_a_single_scan():
    """One image has no variance: re-estimating from it would leave every BatchNorm at 0 / 1 silently."""
    from models.batchnorm import estimate_batchnorm

    encoder = build_model(load_config(None, {"pretrain.encoder": TINY_ENCODER, "pretrain.size": 28}).pretrain).encoder
    with pytest.raises(ValueError, match="at least 2 images"):
        estimate_batchnorm(encoder, torch.zeros(1, 1, 28, 28), 64, torch.device("cpu"))
