"""Ingest: a messy DICOM/PNG/JPEG archive into validated NIfTI volumes and a manifest."""

from pipeline.ingest.run import IngestError, IngestResult, run_ingest, summary_table

__all__ = ["IngestError", "IngestResult", "run_ingest", "summary_table"]
