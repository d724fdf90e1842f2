"""The label-saving factor of the benchmarks' table: read off scratch's curve in log labels, bounded where
the curve says no more."""

from __future__ import annotations

import math
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from label_saving import labels_to_reach, saving

SCRATCH = [(8, 0.60), (32, 0.70), (80, 0.80), (800, 0.90)]


def test_the_crossing_is_interpolated_in_log_labels():
    needed, relation = labels_to_reach(SCRATCH, 0.75)
    assert relation == "=" and needed == pytest.approx(math.sqrt(32 * 80))  # half way between 32 and 80, in log
    assert saving(SCRATCH, 8, 0.75) == (pytest.approx(math.sqrt(32 * 80) / 8), "=")
    assert labels_to_reach(SCRATCH, 0.80) == (pytest.approx(80), "=")


def test_the_first_crossing_counts_and_the_ends_are_bounds():
    dipping = [(8, 0.60), (32, 0.75), (80, 0.70), (800, 0.90)]
    assert labels_to_reach(dipping, 0.72)[0] < 32  # reached on the way up to 32 labels, not after the dip
    assert labels_to_reach(SCRATCH, 0.55) == (8, "<=")  # scratch is there at its smallest budget already
    assert labels_to_reach(SCRATCH, 0.95) == (800, ">")  # and never gets there
    assert saving(SCRATCH, 8, 0.95) == (100.0, ">")
