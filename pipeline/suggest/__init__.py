"""Suggest: which unlabeled scans a radiologist should label next."""

from pipeline.suggest.run import SuggestResult, run_suggest

__all__ = ["SuggestResult", "run_suggest"]
