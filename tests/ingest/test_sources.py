"""From a manifest row back to its DICOM files: the files ingest made the series from, found again with its keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
from conftest import SAMPLE, TEST_KEY

from pipeline.config import IngestConfig
from pipeline.ingest import NOT_DICOM, SeriesRow, series_sources
from pipeline.ingest.sources import SOURCE_CHANGED, SOURCE_MISSING

KEY = TEST_KEY.encode()
SERIES = SAMPLE / "dicom2nifti_testdata" / "generic" / "anatomical" / "001"


def _rows(manifest) -> list[SeriesRow]:
    return [SeriesRow(r.series_key, r.source_dir, r.n_instances, r.kind) for r in manifest.itertuples()]


def test_every_accepted_series_of_the_sample_finds_its_files(sample_manifest):
    """Split series (echoes, enhanced frame types, 2D images one per file) included: each row's key names
    exactly the files ingest converted, all of one series. A folder whose name holds the patient's name (the
    sample's dicom2nifti_testdata, whose patient is "dicom2nifti") was recorded scrubbed: not found."""
    _, accepted = sample_manifest
    found = series_sources(_rows(accepted), IngestConfig(), KEY)
    dicom = accepted[accepted.kind == "dicom"]
    recorded = dicom[[Path(d).is_dir() for d in dicom.source_dir]]
    assert recorded.source_dir.duplicated().any() and len(recorded) < len(dicom)  # split series; scrubbed folders
    for row in recorded.itertuples():
        paths = found[row.series_key]
        assert isinstance(paths, list) and len(paths) == row.n_instances, row.series_key
        assert len({pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID for p in paths}) == 1
    assert {found[k] for k in set(dicom.series_key) - set(recorded.series_key)} == {SOURCE_MISSING}
    assert {found[k] for k in accepted[accepted.kind != "dicom"].series_key} == {NOT_DICOM}


def test_a_series_whose_files_are_gone_or_fewer_says_so(ingest, tmp_path):
    folder = tmp_path / "archive" / "study"
    shutil.copytree(SERIES, folder)
    _, manifest = ingest(tmp_path / "archive", out=tmp_path / "out")
    (row,) = _rows(manifest[manifest.status == "accepted"])
    assert series_sources([row], IngestConfig(), KEY)[row.series_key] == [str(p) for p in sorted(folder.iterdir())]

    sorted(folder.iterdir())[0].unlink()
    assert series_sources([row], IngestConfig(), KEY) == {row.series_key: SOURCE_CHANGED}
    shutil.rmtree(folder)
    assert series_sources([row], IngestConfig(), KEY) == {row.series_key: SOURCE_MISSING}
    assert series_sources([row], IngestConfig(), b"another key") == {row.series_key: SOURCE_MISSING}
