"""No patient name, ID or birth date in clear text: manifest, journal, NIfTI headers, MLflow, console."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pydicom
import pytest
from conftest import ROOT, SAMPLE, TEST_KEY
from pydicom.data import get_testdata_file
from series_tools import copy_series

NAME, PATIENT_ID, BIRTH = "DOE^JANE", "MRN0042417", "19700131"


def _identify(dss):
    for ds in dss:
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT_ID, BIRTH
    return dss


@pytest.mark.slow  # every stage on identified data
def test_identifiers_never_reach_outputs(tmp_path):
    archive = tmp_path / "archive"
    copy_series(archive / "DOE_JANE" / PATIENT_ID, _identify)
    report = pydicom.dcmread(get_testdata_file("reportsi.dcm"))  # a rejected object must not leak its folder
    report.PatientName, report.PatientID = NAME, PATIENT_ID
    report.save_as(archive / "DOE_JANE" / PATIENT_ID / "report.dcm", enforce_file_format=True)
    out, db = tmp_path / "out", tmp_path / "mlflow.db"
    env = {**os.environ, "MEDSSL_PSEUDONYM_KEY": TEST_KEY, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    proc = subprocess.run(
        [
            str(ROOT / ".venv/bin/medssl"),
            "ingest",
            str(archive),
            str(SAMPLE / "cxr_nih1000"),
            "--out",
            str(out),
            "--workers",
            "1",
            "--labels",
            str(SAMPLE / "cxr_nih1000/labels.csv"),
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    needles = [NAME, "DOE_JANE", "DOE JANE", PATIENT_ID, BIRTH]
    haystacks = {"console": (proc.stdout + proc.stderr).encode()}
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".gz":
                import gzip

                data = gzip.decompress(data)
            haystacks[str(path)] = data
    con = sqlite3.connect(db)
    for (table,) in con.execute("select name from sqlite_master where type='table'"):
        haystacks[f"mlflow:{table}"] = repr(con.execute(f"select * from {table}").fetchall()).encode()
    assert len(haystacks) > 10
    leaks = [(where, n) for where, blob in haystacks.items() for n in needles if n.encode().lower() in blob.lower()]
    assert not leaks, (leaks, proc.stderr)
    # the raw patient IDs of the labelled PNGs are hashed too
    import pandas as pd

    ids = {str(p) for p in pd.read_csv(SAMPLE / "cxr_nih1000/labels.csv").patient_id}
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert not ids & set(manifest.patient)
    assert "NOT_AN_IMAGE" in set(manifest.reason)


def test_an_image_folder_named_for_its_patient_is_pseudonymised(ingest, tmp_path):
    """PNG archives laid out per patient (patient00001/study1/...) put the label CSV's patient ID in the
    folder name; the manifest keeps that folder scrubbed, as it does a DICOM series' folder."""
    png = next(p for p in sorted((SAMPLE / "cxr_nih1000").rglob("*.png")))
    folder = tmp_path / "archive" / "patient00417" / "study1"
    folder.mkdir(parents=True)
    (folder / "view1.png").write_bytes(png.read_bytes())
    labels = tmp_path / "labels.csv"
    labels.write_text(f"path,label,patient_id\n{folder / 'view1.png'},1,patient00417\n")
    _, manifest = ingest(tmp_path / "archive", labels=[str(labels)])
    assert list(manifest.status) == ["accepted"] and list(manifest.label) == [1]
    assert "patient00417" not in manifest.to_csv()
    assert manifest.source_dir[0].endswith("/study1")


def test_a_header_that_breaks_the_reader_is_rejected_with_its_folder_scrubbed(monkeypatch, tmp_path):
    """Any error deep in a header (not only the ones named) rejects the file as corrupt, and the folder
    shown for it is scrubbed of the patient's name and ID read just before."""
    from pipeline.ingest import headers

    series = copy_series(tmp_path / "DOE_JANE" / PATIENT_ID, _identify)

    def broken(*args, **kwargs):
        raise IndexError(f"functional group 3 of {args[0]} is empty")

    monkeypatch.setattr(headers, "_dicom_header", broken)
    rec = headers.read_header(str(next(series.iterdir())), TEST_KEY.encode())
    assert rec.reason == "CORRUPT_FILE" and "IndexError" in rec.detail
    assert "DOE_JANE" not in rec.shown_path and PATIENT_ID not in rec.shown_path
    assert "DOE_JANE" not in rec.detail and PATIENT_ID not in rec.detail
