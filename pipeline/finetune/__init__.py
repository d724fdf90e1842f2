"""Finetune: a normal-vs-abnormal detector from an encoder and a budget of labels."""

from pipeline.finetune.run import FinetuneResult, run_finetune, summary_table

__all__ = ["FinetuneResult", "run_finetune", "summary_table"]
