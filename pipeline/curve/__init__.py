"""Curve: validation AUROC against the number of labels, the SSL encoder against training from scratch."""

from pipeline.curve.run import CurveResult, run_curve, summary_table

__all__ = ["CurveResult", "run_curve", "summary_table"]
