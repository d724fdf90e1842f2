"""Publish: the results table back into the PACS, one DICOM Structured Report per result (STOW-RS)."""

from pipeline.publish.run import PublishResult, run_publish, summary_table

__all__ = ["PublishResult", "run_publish", "summary_table"]
