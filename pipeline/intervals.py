"""Bootstrap intervals of the AUROC over scans and seeds, for one detector or for the difference of two.

A few-label AUROC moves for two reasons: which scans the validation part happens to hold, and which labels
(and initial weights) a seed drew. A resample here redraws both: the scans within each class, and the
repeats (the seeds) with replacement; every arm is scored on the same draw, so the interval of a difference
between arms is paired, as the arms drew the same labels with the same seed and were judged on the same
scans. With one repeat it is the usual paired bootstrap of the scans.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import rankdata

INTERVAL = (2.5, 97.5)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The Mann-Whitney form of the AUROC (ties count one half): ``roc_auc_score`` without its input checks,
    which the bootstrap's many small calls would otherwise pay for each time."""
    ranks = rankdata(scores)
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_draws(
    labels: np.ndarray, scores: Mapping[str, np.ndarray], resamples: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """``{arm: resamples draws of its AUROC averaged over repeats}``; ``scores[arm]`` is one row of scan
    scores per repeat (or one row), every arm with as many repeats, scans in the order of ``labels``."""
    labels = np.asarray(labels)
    rows = {arm: np.atleast_2d(np.asarray(s, dtype=np.float64)) for arm, s in scores.items()}
    repeats = {r.shape[0] for r in rows.values()}
    if len(repeats) != 1 or any(r.shape[1] != len(labels) for r in rows.values()):
        raise ValueError("every arm needs as many repeats, each scoring every scan")
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise ValueError("the interval needs normal (0) and abnormal (1) scans")
    (n_repeats,) = repeats
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == c) for c in (0, 1)]
    draws: dict[str, list[float]] = {arm: [] for arm in rows}
    for _ in range(resamples):
        index = np.concatenate([rng.choice(members, size=len(members), replace=True) for members in classes])
        chosen = rng.integers(0, n_repeats, size=n_repeats)
        for arm, r in rows.items():
            draws[arm].append(float(np.mean([auroc(labels[index], r[k, index]) for k in chosen])))
    return {arm: np.asarray(d) for arm, d in draws.items()}


def mean_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """The point estimate the intervals go with: the AUROC of each repeat, averaged."""
    labels = np.asarray(labels)
    return float(np.mean([auroc(labels, row) for row in np.atleast_2d(np.asarray(scores, dtype=np.float64))]))


def interval(draws: np.ndarray) -> tuple[float, float]:
    """The percentile 95 % interval of a set of draws (NaN, NaN without any)."""
    if len(draws) == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(draws, INTERVAL)
    return float(low), float(high)


def paired_difference(
    labels: np.ndarray, first: np.ndarray, second: np.ndarray, resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """AUROC(first) - AUROC(second) on the same scans (and repeats), with its paired 95 % interval."""
    draws = auroc_draws(labels, {"first": first, "second": second}, resamples, seed)
    low, high = interval(draws["first"] - draws["second"])
    difference = mean_auroc(labels, first) - mean_auroc(labels, second)
    return {"difference": difference, "ci_low": low, "ci_high": high, "scans": len(np.asarray(labels))}


def repeat_scores(tables: Mapping[str, pd.DataFrame]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(labels, ``{arm: one row of scan scores per repeat}``) from finetune's ``validation-scores.csv``
    tables (``repeat, scan, label, score``), on the scans every arm scored, in the first table's order."""
    wide = {arm: t.pivot(index="scan", columns="repeat", values="score") for arm, t in tables.items()}
    shared = set.intersection(*(set(w.index) for w in wide.values()))
    # In the first table's order (finetune writes scans in the order of their content): sorted by keyed
    # scan names, the bootstrap's draws would depend on the pseudonym key.
    first = next(iter(tables.values())).drop_duplicates("scan").set_index("scan")
    common = [scan for scan in first.index if scan in shared]
    labels = first.label.loc[common]
    return labels.to_numpy(dtype=int), {arm: w.loc[common].to_numpy().T for arm, w in wide.items()}
