"""Promote: the champion/challenger gate of the model registry."""

from pipeline.promote.run import PromoteResult, run_promote

__all__ = ["PromoteResult", "run_promote"]
