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
from PIL import Image
from rich.console import Console

import pipeline.finetune.semi as semi
from models.detectors import Classifier
from pipeline.config import SemiConfig
from pipeline.data.augment import RandViewd
from pipeline.data.labelled import labelled_items, validation_split
from pipeline.finetune import run_finetune
from pipeline.finetune.semi import ema_update, fit_semi, fixmatch_loss, mean_teacher_loss, rampup
from pipeline.inference import load_encoder

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
    assert not (result.out / "checkpoints").exists()  # a finished run keeps no semi checkpoint
    detector = torch.load(result.detector, weights_only=False)
    assert detector.input_spec == {"spatial_dims": 2, "size": 28, "volume_side": 128}


def test_the_mean_teacher_follows_the_student_and_teaches_every_image():
    teacher_logits = torch.tensor([4.0, -4.0, 0.0])
    student = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    loss, sure = mean_teacher_loss(teacher_logits, student)
    p = torch.sigmoid(teacher_logits)
    assert loss.item() == pytest.approx(float(((0.5 - p) ** 2).mean())) and sure == pytest.approx(2 / 3)
    loss.backward()
    assert student.grad[:2].abs().min() > 0 and student.grad[2] == 0  # unsure images are taught too (to 0.5)
    a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = a.weight.detach().clone()
    ema_update(a, b, 0.9)
    torch.testing.assert_close(a.weight, 0.9 * before + 0.1 * b.weight)
    assert rampup(0.0) == pytest.approx(np.exp(-5)) and rampup(0.15) < rampup(0.3) == rampup(0.9) == 1.0


@pytest.mark.parametrize("method", ["fixmatch", "meanteacher"])
def test_a_semi_fit_killed_after_an_epoch_resumes_to_the_same_detector(method, tmp_path, monkeypatch):
    """The state after each epoch is checkpointed: a fit stopped after its first epoch and started again
    ends with the detector an uninterrupted fit gives (same weights, so the same scores)."""
    config = finetune_config(tmp_path, tmp_path, mode="semi", epochs=2, batch_size=8)
    config = config.model_copy(
        update={"finetune": config.finetune.model_copy(update={"semi": SemiConfig(method=method, ratio=2)})}
    )
    pngs = sorted((PNEUMONIA / "train").glob("*.png"))[:48]
    images = torch.stack([torch.as_tensor(np.asarray(Image.open(p), dtype=np.float32) / 255)[None] for p in pngs])
    labels = np.array([0, 1] * 4)
    views = (RandViewd(2, 28, 0.8, [0], 0.0), RandViewd(2, 28, 0.5, [0], 1.0))

    def fit(checkpoint):
        encoder = load_encoder("scratch", config.pretrain, config.tracking, 0)[0]
        model = Classifier(encoder, 64)
        args = (images[:8], labels, images[8:], config.finetune, views, 0, torch.device("cpu"), False)
        return fit_semi(model, *args, checkpoint=checkpoint, fingerprint="f")[0]

    whole = fit(None)
    real_save, calls = semi.save_state, []

    def killed_after_first_epoch(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(semi, "save_state", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "semi.pt")
    monkeypatch.setattr(semi, "save_state", real_save)
    assert torch.load(tmp_path / "semi.pt", weights_only=True)["epoch"] == 1
    resumed = fit(tmp_path / "semi.pt")
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
