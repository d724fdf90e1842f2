"""kNN AUROC on frozen embeddings: right on separable features, chance on shuffled labels, runs on real images."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SAMPLE
from PIL import Image
from rich.console import Console

from models.encoders import build_encoder
from pipeline.config import load_config
from pipeline.data.labelled import validation_split
from pipeline.errors import DataError
from pipeline.inference import embed_all
from pipeline.pretrain.monitor import knn_auroc, knn_monitor


def _features(labels: np.ndarray, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.eye(2)[labels] + noise * rng.standard_normal((len(labels), 2))
    x = np.hstack([x, rng.standard_normal((len(labels), 14)) * noise])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_separable_features_score_near_one_and_shuffled_near_chance():
    rng = np.random.default_rng(0)
    train_y, val_y = rng.integers(0, 2, 400), rng.integers(0, 2, 200)
    train_x, val_x = _features(train_y, 0.3, 1), _features(val_y, 0.3, 2)
    assert knn_auroc(train_x, train_y, val_x, val_y) > 0.95
    assert abs(knn_auroc(train_x, rng.permutation(train_y), val_x, val_y) - 0.5) < 0.1


def test_one_class_validation_is_refused():
    x = np.eye(4)
    with pytest.raises(ValueError, match="both normal and abnormal"):
        knn_auroc(x, np.array([0, 1, 0, 1]), x, np.zeros(4, dtype=int))


def test_runs_on_real_chest_xrays_with_a_frozen_encoder():
    labels = pd.read_csv(SAMPLE / "cxr_nih1000/labels.csv")
    images = torch.from_numpy(
        np.stack(
            [
                np.asarray(Image.open(SAMPLE / "cxr_nih1000" / f).convert("L"), dtype=np.float32)[None] / 255.0
                for f in labels.file
            ]
        )
    )
    torch.manual_seed(0)
    encoder, _ = build_encoder(2, widths=(8, 16, 32, 64), layers=(1, 1, 1, 1))

    class Frozen(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def embed(self, x: torch.Tensor) -> torch.Tensor:
            return self.encoder(x)

    model = Frozen().train()
    emb = embed_all(model, images, batch_size=10)
    assert emb.shape == (24, 64) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert model.training  # its mode is given back
    y = labels.label.to_numpy()
    assert knn_auroc(emb, y, emb, y, k=1) == 1.0  # each query's nearest neighbour is itself


def test_too_few_labelled_images_switch_the_monitor_off_and_refuse_a_finetune_split():
    """Two scans per class cannot fill three stratified folds: the monitor goes off (pretraining goes on) and
    finetune says to label more, where scikit-learn's fold check used to end the run."""
    rows = [{"label": label, "group": f"g{i}", "voxels": f"v{i}"} for i, label in enumerate([0, 0, 1, 1])]
    out = io.StringIO()
    assert knn_monitor(load_config(None).pretrain, rows, Console(file=out)) is None
    assert "kNN monitor off" in out.getvalue()
    with pytest.raises(DataError, match="label more"):
        validation_split(rows, 0.3, 0)
