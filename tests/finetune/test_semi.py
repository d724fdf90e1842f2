"""The semi mode: the few labels and the archive's other scans, never the validation part nor the scans an
evaluation set names; FixMatch's loss learns only from confident calls and never through them."""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PNEUMONIA, TEST_KEY, finetune_config
from rich.console import Console

from pipeline.data.labelled import labelled_items, validation_split
from pipeline.finetune import run_finetune
from pipeline.finetune.semi import fixmatch_loss

QUIET = Console(file=open(os.devnull, "w"))  # noqa: SIM115


def test_only_confident_calls_teach_and_no_gradient_flows_through_them():
    weak = torch.tensor([4.0, -4.0, 0.1, -0.2], requires_grad=True)  # sure, sure, unsure, unsure
    strong = torch.tensor([0.0, 0.0, 3.0, -3.0], requires_grad=True)
    loss, share = fixmatch_loss(weak, strong, threshold=0.95)
    assert share == 0.5
    # Each sure image adds log(2) (a logit of 0 against its call); the unsure ones add nothing.
    assert loss.item() == pytest.approx(2 * np.log(2) / 4)
    loss.backward()
    assert weak.grad is None or not weak.grad.any()
    assert strong.grad[2:].abs().sum() == 0 and strong.grad[:2].abs().sum() > 0
    assert fixmatch_loss(weak, strong, threshold=0.98)[1] == 0.5  # a logit of 4 is p 0.982
    assert fixmatch_loss(weak, strong, threshold=0.99) == (0.0, 0.0)  # nobody sure: nothing to learn


def test_semi_trains_on_the_scans_outside_validation_and_evaluation(pneumonia_manifest, tmp_path):
    evaluation = PNEUMONIA / "val" / "labels.csv"  # ingested in the same manifest: must stay unseen
    cfg = finetune_config(pneumonia_manifest, tmp_path, mode="semi", budget="4shot", seeds=1, epochs=1)
    cfg = cfg.model_copy(
        update={
            "finetune": cfg.finetune.model_copy(
                update={"exclude": [evaluation], "semi": cfg.finetune.semi.model_copy(update={"ratio": 2})}
            )
        }
    )
    out = io.StringIO()
    result = run_finetune(cfg, Console(file=out, width=200))
    train = labelled_items(pneumonia_manifest, cfg.finetune.labels, TEST_KEY, 2, 0, QUIET)
    held = validation_split(train, cfg.finetune.val_fraction, cfg.finetune.seed)[1]
    assert result.mode == "semi" and result.unlabelled_scans == len(train) - len(held) > 0
    assert f"exclude: labels.csv holds out {len(pd.read_csv(evaluation))} of the manifest's scans" in out.getvalue()
    assert 0.5 < result.val_auroc[0] <= 1.0 and result.detector.is_file()
    detector = torch.load(result.detector, weights_only=False)
    assert detector.input_spec == {"spatial_dims": 2, "size": 28, "volume_side": 128}
