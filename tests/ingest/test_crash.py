"""A native crash in the header pass costs a re-read with pydicom, never the batch and never a file.

dicomsdl really segfaults when it loads the pixel data of a truncated file; the backend never lets it (it
stops before the pixel data). Here that screen is taken away, in the worker processes forked from this
one, so the real crash happens on a real worker between good series: the chunk must come back through
pydicom, the good series voxel-equal to a pydicom-only run and the truncated file rejected by name.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from conftest import SAMPLE, make_config
from rich.console import Console

from pipeline.ingest import backends, run_ingest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not backends.is_available("dicomsdl"), reason="dicomsdl is not installed"),
]
TRUNCATED = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_truncated.dcm"


def test_a_worker_killed_by_a_native_crash_costs_a_pydicom_retry_not_the_batch(ingest, tmp_path, monkeypatch):
    from pipeline.ingest import backend_dicomsdl

    archive = tmp_path / "archive"
    shutil.copytree(SAMPLE / "dicom2nifti_testdata" / "generic" / "anatomical" / "001", archive / "a")
    (archive / "b").mkdir()
    shutil.copyfile(TRUNCATED, archive / "b" / "truncated.dcm")
    shutil.copytree(SAMPLE / "dicom2nifti_testdata" / "ge" / "dti" / "001", archive / "c")
    _, reference = ingest(archive, out=tmp_path / "pydicom", header_backend="pydicom")

    monkeypatch.setattr(backend_dicomsdl, "LOAD_UNTIL", 0xFFFFFFFF)  # load everything: the crash is real
    # No scheduler: a LocalCluster forked from this process, whose workers inherit the patch.
    cfg = make_config([archive], tmp_path / "dicomsdl", None, header_backend="dicomsdl", files_per_task=2)
    with open(os.devnull, "w") as quiet:
        crashed = pd.read_parquet(run_ingest(cfg, Console(file=quiet)).manifest)

    assert len(crashed) == len(reference)
    truncated = crashed[crashed.kind == "file"]
    assert list(truncated.reason) == ["CORRUPT_FILE"] and truncated.detail.iloc[0].startswith("truncated")
    good = ["series_key", "status", "shape", "voxel_sha256"]
    accepted = crashed[crashed.status == "accepted"].sort_values("series_key")
    expected = reference[reference.status == "accepted"].sort_values("series_key")
    assert len(accepted) >= 2
    assert accepted[good].astype(str).values.tolist() == expected[good].astype(str).values.tolist()
