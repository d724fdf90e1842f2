"""The standard SSL monitor: how well frozen embeddings separate normal from abnormal by k nearest neighbours.

Run every few epochs on a small labelled validation set; it needs no training of its own, so it measures
the representation, not a classifier fitted on top.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from sklearn.metrics import roc_auc_score
from torch import nn

from pipeline.config import PretrainConfig
from pipeline.data.items import Item, group_split
from pipeline.data.transforms import load_fixed
from pipeline.inference import embed_all
from pipeline.pretrain.scans import usable_items


def knn_auroc(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """AUROC of a similarity-weighted k-NN vote (cosine, exp(sim / T) weights, as in InstDisc/DINO)."""
    if len(set(val_y.tolist())) < 2:
        raise ValueError("the validation set needs both normal and abnormal images")
    k = min(k, len(train_x))
    similarity = val_x @ train_x.T
    neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(similarity, neighbours, axis=1) / temperature)
    scores = (weights * train_y[neighbours]).sum(axis=1) / weights.sum(axis=1)
    return float(roc_auc_score(val_y, scores))


def knn_split(bank: list[Item], query: list[Item] | None, fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(bank, queries) of labelled items; without queries, a stratified, group-disjoint share of the bank."""
    bank = [it for it in bank if it["label"] is not None]
    if query is not None:
        return bank, [it for it in query if it["label"] is not None]
    return group_split(bank, fraction, seed)


class KnnMonitor:
    """Labelled bank and query images, loaded once with the fixed (centred) transform."""

    def __init__(self, bank: list[Item], query: list[Item], cfg: PretrainConfig, k: int) -> None:

        def load(rows: list[Item]) -> tuple[torch.Tensor, np.ndarray]:
            images = load_fixed(rows, cfg.spatial_dims, cfg.size, cfg.volume_side)
            return images, np.array([r["label"] for r in rows])

        (self.bank, self.bank_y), (self.query, self.query_y) = load(bank), load(query)
        self.k = k

    def __call__(self, model: nn.Module, device: torch.device) -> float:
        bank, query = embed_all(model, self.bank, device), embed_all(model, self.query, device)
        return knn_auroc(bank, self.bank_y, query, self.query_y, k=self.k)


def knn_monitor(cfg: PretrainConfig, train: list[Item], console: Console) -> KnnMonitor | None:
    """The configured monitor (bank and queries from ``cfg.monitor``, else held out of ``train``), or None."""
    if cfg.monitor.every == 0:
        return None

    def labelled(path: Path | None) -> list[Item] | None:
        return None if path is None else usable_items(path, cfg, console, "kNN monitor")[0]

    bank = labelled(cfg.monitor.bank) or train
    bank, query = knn_split(bank, labelled(cfg.monitor.query), cfg.monitor.query_fraction, cfg.seed)
    classes = {it["label"] for it in query}, {it["label"] for it in bank}
    if classes[0] != {0, 1} or classes[1] != {0, 1}:
        console.print("kNN monitor off: it needs labelled normal and abnormal images in the bank and the queries.")
        return None
    return KnnMonitor(bank, query, cfg, cfg.monitor.k)
