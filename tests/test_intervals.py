"""Bootstrap intervals over scans and seeds: the AUROC they rest on, their pairing, and the score tables
finetune writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from pipeline.intervals import auroc, auroc_draws, interval, mean_auroc, paired_difference, repeat_scores


def test_auroc_is_sklearns_with_ties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # rounded: many ties
    assert auroc(labels, scores) == roc_auc_score(labels, scores)


def test_seeds_that_disagree_widen_the_interval_and_pairing_removes_what_arms_share():
    """Three repeats that rank the scans differently give a wider interval than three identical ones; an
    arm against itself differs by exactly nothing on every draw."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(40, int), np.ones(40, int)]
    base = labels + rng.normal(0, 1.0, 80)
    steady = np.stack([base] * 3)
    spread = np.stack([base + rng.normal(0, s, 80) for s in (0.1, 1.5, 3.0)])
    draws = auroc_draws(labels, {"steady": steady, "spread": spread}, 500, 0)
    width = {arm: np.subtract(*interval(d)[::-1]) for arm, d in draws.items()}
    assert width["spread"] > width["steady"] > 0
    low, high = interval(draws["steady"])
    assert low < mean_auroc(labels, steady) < high and low >= 0 and high <= 1
    same = paired_difference(labels, spread, spread, 200, 0)
    assert (same["difference"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)


def test_repeat_scores_aligns_arms_on_the_scans_both_scored():
    first = pd.DataFrame(
        {"repeat": [0, 0, 0, 1, 1, 1], "scan": list("abc") * 2, "label": [0, 1, 1] * 2, "score": [1, 2, 3, 4, 5, 6]}
    )
    second = pd.DataFrame({"repeat": [0, 0, 1, 1], "scan": list("cb") * 2, "label": [1, 1] * 2, "score": [7, 8, 9, 0]})
    labels, rows = repeat_scores({"first": first, "second": second})
    assert labels.tolist() == [1, 1]  # scans b, c
    assert rows["first"].tolist() == [[2, 3], [5, 6]] and rows["second"].tolist() == [[8, 7], [0, 9]]
