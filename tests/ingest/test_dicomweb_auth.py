"""A PACS that wants a login, for real: Orthanc with its own HTTP basic authentication (``AuthenticationEnabled``,
``RegisteredUsers``), and Orthanc behind a bearer-token check (its Lua HTTP filter: Orthanc has no tokens of
its own). Two studies each; what a right login pulls, what a wrong one says, and that the secret is found
nowhere afterwards: not in the log, the console, the output folder, the staging ledger or the MLflow store.
"""

from __future__ import annotations

import base64
import gzip
import io
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pydicom
import pytest
from conftest import ROOT, SAMPLE, TEST_KEY, make_config
from orthanc import dated_copy, login, needs_orthanc, orthanc, store
from rich.console import Console

from pipeline.config import DicomwebConfig
from pipeline.errors import DicomwebError
from pipeline.ingest import run_ingest
from pipeline.ingest.dicomweb import pull_studies
from pipeline.ingest.ledger import LEDGER
from pipeline.pseudonym import pseudonym

pytestmark = [pytest.mark.slow, needs_orthanc]  # real Orthanc servers
KEY = TEST_KEY.encode()
SERIES = SAMPLE / "dicom2nifti_testdata" / "generic" / "anatomical" / "001"
USER, PASSWORD, TOKEN = "medssl-reader", "pw-Tq83-never-logged", "tok-Zr61-never-logged"
# What must never be written anywhere: the secrets, and the header that carries the password.
SECRETS = [PASSWORD, TOKEN, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()]


@dataclass
class Pacs:
    url: str  # the DICOMweb root
    folder: Path  # Orthanc's folder: blocked.txt there refuses retrieving a study (403)
    studies: list[str]  # StudyInstanceUIDs, as stored

    def key(self, uid: str) -> str:
        return pseudonym(KEY, "study|" + uid)


def _serve(tmp: Path, **logins) -> Iterator[Pacs]:
    """Orthanc with ``logins`` (users= or tokens=), holding two made-up studies of one made-up patient."""
    payloads = [dated_copy(SERIES, date(2024, 3, d), ("ROE^JOAN", "MRN-5150"), f"medssl-auth-{d}") for d in (1, 2)]
    with orthanc(tmp, **logins) as root:
        store(root, [p for study in payloads for p in study], auth=login(logins.get("users"), logins.get("tokens")))
        uids = [pydicom.dcmread(io.BytesIO(study[0]), stop_before_pixels=True).StudyInstanceUID for study in payloads]
        yield Pacs(f"{root}/dicom-web", tmp, uids)


@pytest.fixture(scope="module")
def basic(tmp_path_factory) -> Iterator[Pacs]:
    yield from _serve(tmp_path_factory.mktemp("orthanc-basic"), users={USER: PASSWORD})


@pytest.fixture(scope="module")
def bearer(tmp_path_factory) -> Iterator[Pacs]:
    yield from _serve(tmp_path_factory.mktemp("orthanc-bearer"), tokens=[TOKEN])


def _pull(pacs: Pacs, staging: Path, **auth):
    return pull_studies(DicomwebConfig(url=pacs.url, timeout=10, auth=auth), staging, KEY, Console(file=io.StringIO()))


def _file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def _everything(out: Path, db: Path) -> dict[str, bytes]:
    """Every file under ``out`` (decompressed), and every table of the MLflow store."""
    found = {}
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found[str(path)] = gzip.decompress(data) if path.suffix == ".gz" else data
    with sqlite3.connect(db) as con:
        for (table,) in con.execute("select name from sqlite_master where type='table'"):
            found[f"mlflow:{table}"] = repr(con.execute(f"select * from {table}").fetchall()).encode()
    return found


def test_basic_login_from_the_environment_pulls_and_leaves_no_secret_anywhere(
    basic, tmp_path, dask_scheduler, monkeypatch, caplog
):
    monkeypatch.setenv("MEDSSL_DICOMWEB_USER", USER)
    monkeypatch.setenv("MEDSSL_DICOMWEB_PASSWORD", PASSWORD)
    monkeypatch.chdir(tmp_path)  # where MLflow would put artifacts, so they are searched too
    out, db, console = tmp_path / "out", tmp_path / "mlflow.db", io.StringIO()
    dicomweb = {"url": basic.url, "timeout": 10, "auth": {"method": "basic"}}
    cfg = make_config([], out, dask_scheduler, f"sqlite:///{db}", dicomweb=dicomweb)
    with caplog.at_level("DEBUG"):
        result = run_ingest(cfg, Console(file=console, width=200))
    assert (result.pull.found, result.pull.fetched, sum(result.pull.failed.values())) == (2, 2, 0)
    assert result.accepted == 2
    assert set((out / "staging" / LEDGER).read_text().split('"')) >= set(map(basic.key, basic.studies))

    haystacks = {"log": caplog.text.encode(), "console": console.getvalue().encode()}
    haystacks |= _everything(tmp_path, db)  # out/ (manifest, journal, staging, volumes), mlflow.db, mlruns/
    assert b"ingest.dicomweb.auth.method" in haystacks["mlflow:params"]  # the config was logged: it can leak
    assert len(haystacks) > 10
    leaks = [(where, s) for where, blob in haystacks.items() for s in SECRETS if s.encode() in blob]
    assert not leaks


def test_a_wrong_password_is_http_401_in_one_line_and_no_traceback(basic, tmp_path, dask_scheduler):
    """The search itself is refused: nothing can be pulled, so the run stops with the reason, not a crash."""
    wrong = "pw-wrong-9f2"
    env = {**os.environ, "MEDSSL_DICOMWEB_USER": USER, "MEDSSL_DICOMWEB_PASSWORD": wrong, "COLUMNS": "300"}
    args = ["ingest", "--dicomweb", basic.url, "--dicomweb-auth", "basic", "--out", str(tmp_path / "out")]
    args += ["--scheduler", dask_scheduler, "--no-tracking"]
    proc = subprocess.run([str(ROOT / ".venv/bin/medssl"), *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error (ingest.dicomweb): {basic.url} answered HTTP 401 to a QIDO-RS study search: HTTP_401, it refuses "
        "the basic credential in $MEDSSL_DICOMWEB_USER and $MEDSSL_DICOMWEB_PASSWORD"
    ]
    assert wrong not in proc.stdout + proc.stderr


def test_a_login_file_open_to_others_is_refused_and_a_closed_one_pulls(basic, tmp_path):
    """Mode 644: refused before the server is asked. Mode 600: pulled; a study the server then refuses to
    this user (a PACS with rights per study) is HTTP_403 for that study alone, and the pull goes on."""
    secret = _file(tmp_path / "pacs-login", f"{USER}:{PASSWORD}", 0o644)
    with pytest.raises(DicomwebError, match=r"readable by others \(mode 644\): chmod 600") as err:
        _pull(basic, tmp_path / "staging", method="basic", file=secret)
    assert PASSWORD not in str(err.value) and not (tmp_path / "staging").exists()

    secret.chmod(0o600)
    refused, fetched = basic.studies
    (basic.folder / "blocked.txt").write_text(refused + "\n")
    try:
        result = _pull(basic, tmp_path / "staging", method="basic", file=secret)
    finally:
        (basic.folder / "blocked.txt").unlink()
    assert result.failures == {basic.key(refused): "HTTP_403"} and result.fetched == 1
    assert (tmp_path / "staging" / basic.key(fetched)).is_dir()


def test_bearer_token_from_the_environment_or_a_file(bearer, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSSL_DICOMWEB_TOKEN", TOKEN)
    assert _pull(bearer, tmp_path / "env", method="bearer").fetched == 2
    token = _file(tmp_path / "token", TOKEN)
    assert _pull(bearer, tmp_path / "file", method="bearer", file=token).fetched == 2

    monkeypatch.setenv("MEDSSL_DICOMWEB_TOKEN", "tok-revoked-77")  # Orthanc's filter can only answer 403
    with pytest.raises(DicomwebError, match=r"HTTP_403, it refuses the bearer credential in \$MEDSSL_DICOMWEB_TOKEN"):
        _pull(bearer, tmp_path / "wrong", method="bearer")
    with pytest.raises(DicomwebError, match="HTTP 403 to a QIDO-RS study search: HTTP_403, it refuses this client"):
        _pull(bearer, tmp_path / "none")  # no login configured
