"""Detection metrics with bootstrap confidence intervals: what a radiology department asks of a detector.

AUROC ranks; AUPRC matters when abnormal scans are rare; sensitivity at a fixed high specificity is how a
triage threshold is set in practice (flag few normal scans, catch as many abnormal ones as possible).
Intervals come from resampling scans with replacement within each class, so every resample keeps the
class balance of the evaluation set and both classes are always present.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from pipeline.inference import operating_point

SPECIFICITIES = (0.90, 0.95)


def sensitivity_at(labels: np.ndarray, scores: np.ndarray, specificity: float) -> float:
    """The highest sensitivity among thresholds whose specificity is at least ``specificity``.

    Every threshold counts: roc_curve's default drops points on straight runs of the curve (tied scores of
    both classes), and the one the specificity needs can be among them."""
    return operating_point(labels, scores, specificity)["sensitivity"]


def point_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    metrics = {
        "auroc": float(roc_auc_score(labels, scores)),
        "auprc": float(average_precision_score(labels, scores)),
    }
    for spec in SPECIFICITIES:
        metrics[f"sensitivity_at_{round(spec * 100)}_specificity"] = sensitivity_at(labels, scores, spec)
    return metrics


def bootstrap(
    labels: np.ndarray, scores: np.ndarray, resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """``{metric: {value, ci_low, ci_high}}``: the point estimate and a percentile 95 % interval."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise ValueError("the evaluation set needs normal (0) and abnormal (1) scans")
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == c) for c in (0, 1)]
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        index = np.concatenate([rng.choice(members, size=len(members), replace=True) for members in classes])
        for name, value in point_metrics(labels[index], scores[index]).items():
            draws.setdefault(name, []).append(value)
    out = {}
    for name, value in point_metrics(labels, scores).items():
        low, high = np.percentile(draws[name], [2.5, 97.5]) if resamples else (np.nan, np.nan)
        out[name] = {"value": value, "ci_low": float(low), "ci_high": float(high)}
    return out
