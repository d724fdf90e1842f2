"""Pretrain: a self-supervised encoder (SimCLR, MoCo, DINO, MAE; 2D or 3D) on the ingested, unlabeled scans."""

from pipeline.pretrain.run import PretrainResult, run_pretrain, summary_table

__all__ = ["PretrainResult", "run_pretrain", "summary_table"]
