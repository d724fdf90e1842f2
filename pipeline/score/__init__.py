"""Score: the champion scores newly ingested series into a growing results table."""

from pipeline.score.run import ScoreResult, run_score, summary_table

__all__ = ["ScoreResult", "run_score", "summary_table"]
