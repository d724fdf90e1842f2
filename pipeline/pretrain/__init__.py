"""Pretrain: self-supervised encoders on the ingested, unlabeled scans (work in progress, issue 4)."""
