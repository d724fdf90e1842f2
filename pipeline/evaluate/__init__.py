"""Evaluate: a detector's AUROC, AUPRC and sensitivity at fixed specificity, with intervals, on labelled
images it never saw."""

from pipeline.evaluate.run import EvaluateResult, run_evaluate, summary_table

__all__ = ["EvaluateResult", "run_evaluate", "summary_table"]
