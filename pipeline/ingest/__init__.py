"""Ingest: a messy DICOM/PNG/JPEG archive (or a PACS, over DICOMweb) into validated NIfTI volumes and a manifest."""

from pipeline.ingest.dicomweb import PullResult, pull_studies
from pipeline.ingest.run import IngestResult, run_ingest, summary_table

__all__ = ["IngestResult", "PullResult", "pull_studies", "run_ingest", "summary_table"]
