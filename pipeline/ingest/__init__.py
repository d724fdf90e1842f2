"""Ingest: a messy DICOM/PNG/JPEG archive (or a PACS, over DICOMweb) into validated NIfTI volumes and a manifest.

Besides ``run_ingest``, what publishing results back needs of it: the DICOMweb client and its failure reasons,
and the way back from a manifest row to its DICOM files (``series_sources``).
"""

from pipeline.ingest.dicomweb import PullResult, connect, failure_reason, pull_studies, quiet_http_logs, safe_url
from pipeline.ingest.run import IngestResult, run_ingest, summary_table
from pipeline.ingest.sources import NOT_DICOM, SeriesRow, series_sources

__all__ = [
    "NOT_DICOM",
    "IngestResult",
    "PullResult",
    "SeriesRow",
    "connect",
    "failure_reason",
    "pull_studies",
    "quiet_http_logs",
    "run_ingest",
    "safe_url",
    "series_sources",
    "summary_table",
]
