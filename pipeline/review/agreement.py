"""What the readers' decisions add up to: agreement between readers, the scans they disagree on, and the
label each scan ends with.

Only normal and abnormal are calls; unsure and skip abstain. Two readers disagree on a scan when their
calls differ; an adjudicator's call settles it and, where given, is the scan's label. Otherwise a scan is
labelled when its readers' calls agree; disagreements nobody settled, abstentions and undecided scans get
no label. Cohen's kappa is computed per pair of readers over the scans both called.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from sklearn.metrics import cohen_kappa_score

from pipeline.review.store import Decision

CALLS = {"normal": 0, "abnormal": 1}


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    scans: int
    kappa: float | None  # None: no shared calls, or one class only (kappa is undefined)


def calls(decisions: list[Decision]) -> dict[str, dict[str, int]]:
    """scan -> {reader pseudonym: 0/1} of the readers (not adjudicators) who called it."""
    out: dict[str, dict[str, int]] = {}
    for d in decisions:
        if d.role == "reader" and d.decision in CALLS:
            out.setdefault(d.series_key, {})[d.reader] = CALLS[d.decision]
    return out


def adjudicated(decisions: list[Decision]) -> dict[str, int]:
    """scan -> the latest adjudicator call on it."""
    return {d.series_key: CALLS[d.decision] for d in decisions if d.role == "adjudicator" and d.decision in CALLS}


def disagreements(decisions: list[Decision]) -> tuple[list[str], list[str]]:
    """(unsettled, settled) scans the readers called differently, in the order they were first decided."""
    settled = adjudicated(decisions)
    split = [scan for scan, by in calls(decisions).items() if len(set(by.values())) > 1]
    return [s for s in split if s not in settled], [s for s in split if s in settled]


def final_labels(decisions: list[Decision]) -> dict[str, int]:
    """scan -> 0/1: the adjudicator's call, else the readers' agreed call."""
    labels = {scan: next(iter(set(by.values()))) for scan, by in calls(decisions).items() if len(set(by.values())) == 1}
    labels.update(adjudicated(decisions))
    return labels


def kappas(decisions: list[Decision]) -> list[Pair]:
    by_reader: dict[str, dict[str, int]] = {}
    for scan, by in calls(decisions).items():
        for reader, call in by.items():
            by_reader.setdefault(reader, {})[scan] = call
    pairs = []
    for a, b in itertools.combinations(sorted(by_reader), 2):
        shared = sorted(set(by_reader[a]) & set(by_reader[b]))
        x, y = [by_reader[a][s] for s in shared], [by_reader[b][s] for s in shared]
        kappa = None
        if shared and len(set(x) | set(y)) > 1:
            value = float(cohen_kappa_score(x, y))
            kappa = None if math.isnan(value) else value
        pairs.append(Pair(a, b, len(shared), kappa))
    return pairs
