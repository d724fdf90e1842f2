"""No patient name, ID or birth date in clear text: manifest, journal, NIfTI headers, MLflow, console."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pydicom
from conftest import ROOT, SAMPLE, TEST_KEY
from pydicom.data import get_testdata_file
from series_tools import copy_series

NAME, PATIENT_ID, BIRTH = "DOE^JANE", "MRN0042417", "19700131"


def _identify(dss):
    for ds in dss:
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT_ID, BIRTH
    return dss


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
