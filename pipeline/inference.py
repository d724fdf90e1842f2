"""Running a saved model over items: what every stage that embeds or scores scans shares.

An encoder or detector carries ``input_spec`` (how pretraining fed it); ``input_spec`` reads it, or the
registry tags of older models. Embeddings are unit length; scores are logits (higher: more likely
abnormal). Per-scan figures average a volume's slices first, by the item's ``scan``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from models.encoders import build_encoder
from pipeline.config import PretrainConfig, TrackingConfig
from pipeline.data.items import Item, items
from pipeline.data.screen import screen
from pipeline.data.transforms import load_fixed
from pipeline.errors import RegistryError
from pipeline.registry.store import load_model


@dataclass(frozen=True)
class InputSpec:
    """How to feed an encoder: what ``pretrain`` trained it on."""

    spatial_dims: int
    size: int
    volume_side: int

    def load(self, found: Sequence[Item]) -> torch.Tensor:
        """The fixed (centred) input of each item, stacked: small sets, held in memory."""
        return load_fixed(found, self.spatial_dims, self.size, self.volume_side)


def input_spec(module: nn.Module, tags: dict[str, str], fallback: InputSpec | None) -> InputSpec:
    """What a saved encoder or detector takes: its own ``input_spec``, else its registry tags, else
    ``fallback`` (None: a ``RegistryError``, since guessing would score garbage)."""
    spec = getattr(module, "input_spec", None)
    if spec:
        return InputSpec(**spec)
    volume_side = fallback.volume_side if fallback else 128
    if "input_size" in tags:
        return InputSpec(int(tags["spatial_dims"]), int(tags["input_size"]), volume_side)
    if fallback is None:
        raise RegistryError("the model does not say what input it takes (no input_spec, no input_size tag)")
    return fallback


def load_encoder(ref: str, pre: PretrainConfig, tracking: TrackingConfig, seed: int) -> tuple[nn.Module, InputSpec]:
    """The encoder ``ref`` names, and how to feed it (from the module, its registry tags, or for ``scratch``
    and older encoders, the pretrain settings); ``scratch``: ``pre.encoder`` from random weights."""
    fallback = InputSpec(pre.spatial_dims, pre.size, pre.volume_side)
    if ref == "scratch":
        torch.manual_seed(seed)
        return build_encoder(pre.spatial_dims, 1, pre.encoder.widths, pre.encoder.layers)[0], fallback
    try:
        module, tags = load_model(ref, tracking)
    except RegistryError as exc:
        raise RegistryError(f"encoder: {exc}; or start from scratch") from None
    return module, input_spec(module, tags, fallback)


def adapted_to(module: nn.Module) -> str | None:
    """The digest of the target scans a detector (or its encoder) was adapted to (medssl adapt), or None."""
    return getattr(module, "adapted_to", None) or getattr(getattr(module, "encoder", None), "adapted_to", None)


@torch.no_grad()
def embed_all(
    model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu", batch_size: int = 64
) -> np.ndarray:
    """L2-normalised embeddings of ``images`` (N, C, ...) from ``model.embed`` (an SSL method) or
    ``model`` itself (an encoder), in eval mode on ``device``. Encoders arrive on the CPU (loaded from the
    registry or built): the model goes to ``device`` for the pass and back to where it was after."""
    was_training, home = model.training, next(model.parameters()).device
    model.to(device).eval()
    features = getattr(model, "embed", model)
    parts = [features(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    model.to(home).train(was_training)
    return torch.nn.functional.normalize(torch.cat(parts), dim=1).numpy()


@torch.no_grad()
def score(detector: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 128) -> np.ndarray:
    """Anomaly scores (higher: more likely abnormal) of ``images``, in eval mode."""
    detector.to(device).eval()
    parts = [detector(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    detector.cpu()
    return torch.cat(parts).numpy()


def per_scan(found: Sequence[Item], scores: np.ndarray) -> pd.DataFrame:
    """One row per scan: its label and the mean of its items' scores (a volume's slices), in the order the
    items come (their content's), not sorted by the keyed scan names."""
    table = pd.DataFrame({"scan": [it["scan"] for it in found], "label": [it["label"] for it in found]})
    table["score"] = scores
    return table.groupby("scan", as_index=False, sort=False).agg(label=("label", "first"), score=("score", "mean"))


def scan_auroc(found: Sequence[Item], scores: np.ndarray) -> float:
    """AUROC over scans: the scores of one scan's items (slices) are averaged first."""
    scans = per_scan(found, scores)
    return float(roc_auc_score(scans.label, scans.score))


def operating_point(
    labels: np.ndarray, scores: np.ndarray, specificity: float | None, sensitivity: float | None = None
) -> dict[str, float]:
    """The threshold (flag at ``score >= threshold``) that meets a target on these scans: specificity at
    least ``specificity`` with the most sensitivity, or else sensitivity at least ``sensitivity`` with the
    most specificity; and the specificity and sensitivity it gives there. Every threshold counts (no point
    of a tied run is dropped); when no flagged scan can meet it, the threshold is just above every score."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    if specificity is not None:
        allowed = np.flatnonzero(fpr <= 1 - specificity + 1e-12)
        best = allowed[np.argmax(tpr[allowed])]
    else:
        allowed = np.flatnonzero(tpr >= (sensitivity or 0.0) - 1e-12)
        best = allowed[np.argmin(fpr[allowed])]
    threshold = thresholds[best] if np.isfinite(thresholds[best]) else np.nextafter(scores.max(), np.inf)
    return {"threshold": float(threshold), "specificity": float(1 - fpr[best]), "sensitivity": float(tpr[best])}


def scan_scores(
    model: nn.Module, rows: pd.DataFrame, root: Path, spec: InputSpec, slices: int, device: torch.device
) -> pd.DataFrame:
    """One row per scan (manifest ``series_key``): its label (None when it has none) and mean score over its
    items (volume slices). Files that are missing or changed since ingest are left out."""
    usable, _ = screen(items(rows, root, spec.spatial_dims, slices), root)
    if not usable:
        return pd.DataFrame(columns=["scan", "label", "score"])
    return per_scan(usable, score(model, spec.load(usable), device))


def scan_embeddings(encoder: nn.Module, found: Sequence[Item], spec: InputSpec, device: torch.device) -> pd.DataFrame:
    """One unit-length embedding per scan (the mean over a volume's slices), indexed by scan."""
    z = embed_all(encoder, spec.load(found), device)
    frame = pd.DataFrame(z).assign(scan=[it["scan"] for it in found]).groupby("scan", sort=False).mean()
    values = frame.to_numpy()
    return pd.DataFrame(values / np.linalg.norm(values, axis=1, keepdims=True), index=frame.index)
