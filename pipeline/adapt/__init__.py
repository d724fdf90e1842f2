"""Adapt: measure how far a new site has shifted (``shift``), and adapt a model to it from its unlabeled
scans (``run``: AdaBN, TENT, continued pretraining)."""

from pipeline.adapt.run import AdaptResult, run_adapt, summary_table
from pipeline.adapt.shift import ShiftResult, run_shift
from pipeline.adapt.shift import summary_table as shift_table

__all__ = ["AdaptResult", "ShiftResult", "run_adapt", "run_shift", "shift_table", "summary_table"]
