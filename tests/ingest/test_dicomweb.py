"""PACS pull over DICOMweb, against a real Orthanc with its DICOMweb plugin started on 127.0.0.1 for this module.

Orthanc holds the bundled DICOM studies plus one copy re-dated to 2024-01-15 under a made-up patient, so the
date range and the pseudonyms have something to bite on. A study is made to fail the real way: Orthanc's own
HTTP filter (a Lua callback reading a file this module writes) answers 403 to retrieving it.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from conftest import ROOT, SAMPLE, TEST_KEY, make_config
from orthanc import dated_copy, free_port, needs_orthanc, orthanc, store
from rich.console import Console

from pipeline.config import DicomwebConfig, load_config
from pipeline.errors import ConfigError, DicomwebError, IngestError
from pipeline.ingest import run_ingest
from pipeline.ingest.dicomweb import PARTIAL, pull_studies
from pipeline.ingest.ledger import LEDGER
from pipeline.pseudonym import pseudonym

pytestmark = [pytest.mark.slow, needs_orthanc]  # a real Orthanc PACS, waiting through the client's retries
KEY = TEST_KEY.encode()
SOURCES = [SAMPLE / "dicom2nifti_testdata", SAMPLE / "dcm_qa_ts" / "In"]
DATED = date(2024, 1, 15)
PATIENT = ("DOE^JANE", "MRN-4711-TEST")  # the re-dated copy's name and ID: must never appear in clear
# Denies GET of any URL holding a UID listed in the file, so WADO-RS of that study fails with HTTP 403.


@dataclass
class Study:
    uid: str
    day: date
    n: int
    identifiers: set[str]  # everything that names the patient or the study in the DICOM files


@dataclass
class Pacs:
    url: str  # the DICOMweb root
    root: str  # Orthanc's own REST root
    blocked: Path  # UIDs listed here are refused (HTTP 403) on retrieval
    studies: dict[str, Study]

    def key(self, uid: str) -> str:
        """The staging folder name of a study."""
        return pseudonym(KEY, "study|" + uid)

    def between(self, since: date | None, until: date | None) -> set[str]:
        return {u for u, s in self.studies.items() if (not since or s.day >= since) and (not until or s.day <= until)}


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> Iterator[Pacs]:
    """A real Orthanc holding the bundled studies and the re-dated copy; stopped at the end of the module."""
    tmp = tmp_path_factory.mktemp("orthanc")
    with orthanc(tmp) as root:
        payloads = [p.read_bytes() for src in SOURCES for p in sorted(src.rglob("*.dcm"))]
        payloads += _dated_copy()
        store(root, payloads)
        studies: dict[str, Study] = {}
        for data in payloads:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            day = date(int(ds.StudyDate[:4]), int(ds.StudyDate[4:6]), int(ds.StudyDate[6:8]))
            study = studies.setdefault(ds.StudyInstanceUID, Study(ds.StudyInstanceUID, day, 0, set()))
            study.n += 1
            names = (str(ds.PatientName), str(ds.PatientID), ds.StudyInstanceUID, ds.SeriesInstanceUID)
            study.identifiers |= {v for v in (*names, ds.SOPInstanceUID) if len(v) >= 3}
        yield Pacs(f"{root}/dicom-web", root, tmp / "blocked.txt", studies)


def _dated_copy() -> list[bytes]:
    return dated_copy(
        SAMPLE / "dicom2nifti_testdata" / "generic" / "anatomical" / "001", DATED, PATIENT, "medssl-dated"
    )


def _pull(pacs: Pacs, staging: Path, console: Console | None = None, **options):
    cfg = DicomwebConfig(url=pacs.url, **{"timeout": 10, **options})
    return pull_studies(cfg, staging, KEY, console or Console(file=io.StringIO()))


def _ledger(staging: Path) -> dict:
    return json.loads((staging / LEDGER).read_text())["studies"]


def _dcm_count(folder: Path) -> int:
    return len(list(folder.rglob("*.dcm")))


def test_pull_then_ingest_then_nothing_new(pacs, tmp_path, dask_scheduler):
    """Every study is fetched and its series ingested as if read from the folders; a re-run fetches nothing."""
    out, direct = tmp_path / "out", tmp_path / "direct"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    quiet = Console(file=io.StringIO())
    cfg = make_config([], out, dask_scheduler, store, dicomweb={"url": pacs.url, "timeout": 10})
    first = run_ingest(cfg, quiet)
    assert first.pull is not None
    n = len(pacs.studies)
    assert (first.pull.found, first.pull.fetched, first.pull.already, sum(first.pull.failed.values())) == (n, n, 0, 0)
    assert first.pull.instances == sum(s.n for s in pacs.studies.values())
    assert first.pull.staging == out / "staging"
    assert {p.name for p in (out / "staging").iterdir()} == {LEDGER, *map(pacs.key, pacs.studies)}

    # The same DICOM read from folders (the re-dated copy written out as files) gives the same accepted volumes.
    dated = tmp_path / "dated"
    dated.mkdir()
    for i, data in enumerate(_dated_copy()):
        (dated / f"{i}.dcm").write_bytes(data)
    reference = run_ingest(make_config([*SOURCES, dated], direct, dask_scheduler), quiet)
    pulled, expected = pd.read_parquet(first.manifest), pd.read_parquet(reference.manifest)
    pulled, expected = pulled[pulled.status == "accepted"], expected[expected.status == "accepted"]
    assert len(pulled) == first.accepted > 0
    assert sorted(pulled.voxel_sha256) == sorted(expected.voxel_sha256)
    assert all(Path(d).relative_to(out / "staging") for d in pulled.source_dir)
    manifest = pd.read_parquet(first.manifest).to_csv().lower()
    assert [i for s in pacs.studies.values() for i in s.identifiers if i.lower() in manifest] == []

    second = run_ingest(cfg, quiet)
    assert (second.pull.found, second.pull.fetched, second.pull.already) == (n, 0, n)
    assert second.converted == 0 and second.unchanged == first.converted

    import mlflow  # the pull counts are in the ingest run's metrics

    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("medssl").experiment_id], order_by=["start_time ASC"])
    assert [r.data.metrics["pull.studies_fetched"] for r in runs] == [n, 0]
    assert runs[1].data.metrics["pull.studies_already_fetched"] == n


def test_leftovers_of_a_kill_are_finished(pacs, tmp_path):
    """What a kill can leave (a partial study, a complete study not yet in the ledger) is finished next time."""
    staging = tmp_path / "staging"
    _pull(pacs, staging)
    (half, adopted, pruned, *_) = sorted(pacs.studies, key=lambda u: -pacs.studies[u].n)
    ledger = json.loads((staging / LEDGER).read_text())
    for uid in (half, adopted, pruned):
        del ledger["studies"][pacs.key(uid)]
    (staging / LEDGER).write_text(json.dumps(ledger))
    # Killed mid-study: the study is only in its partial folder, with some of its instances.
    partial = staging / (PARTIAL + pacs.key(half))
    (staging / pacs.key(half)).rename(partial)
    for extra in sorted(partial.rglob("*.dcm"))[1:]:
        extra.unlink()
    # Killed after the rename, before the ledger write: complete, so adopted without fetching it again.
    adopted_files = {p: p.stat().st_mtime_ns for p in (staging / pacs.key(adopted)).rglob("*.dcm")}
    # A study folder that lost files (pruned by hand) and is not in the ledger: fetched again.
    for extra in sorted((staging / pacs.key(pruned)).rglob("*.dcm"))[1:]:
        extra.unlink()

    result = _pull(pacs, staging)
    assert (result.found, result.fetched, result.already, sum(result.failed.values())) == (5, 2, 3, 0)
    assert not partial.exists()
    assert {p: p.stat().st_mtime_ns for p in (staging / pacs.key(adopted)).rglob("*.dcm")} == adopted_files
    assert set(_ledger(staging)) == set(map(pacs.key, pacs.studies))
    for uid, study in pacs.studies.items():
        assert _dcm_count(staging / pacs.key(uid)) == study.n
        assert _ledger(staging)[pacs.key(uid)]["instances"] == study.n


KILLED_PULL = """
import io, os, signal, sys
from pathlib import Path
import pydicom
from rich.console import Console
from pipeline.config import DicomwebConfig
from pipeline.ingest.dicomweb import pull_studies

url, staging, key, kill_at = sys.argv[1], Path(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
save_as, writes = pydicom.Dataset.save_as, 0

def save_then_die(self, *args, **kwargs):
    global writes
    writes += 1
    if writes == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return save_as(self, *args, **kwargs)

pydicom.Dataset.save_as = save_then_die
pull_studies(DicomwebConfig(url=url), staging, key, Console(file=io.StringIO()))
"""


def test_pull_killed_mid_study_resumes(pacs, tmp_path):
    """SIGKILL in the middle of a study, as an OOM kill or a pulled plug would; the next pull finishes the job."""
    staging = tmp_path / "staging"
    kill_at = max(s.n for s in pacs.studies.values()) + 2  # past the first study, whichever comes first
    args = [pacs.url, str(staging), TEST_KEY, str(kill_at)]
    proc = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", KILLED_PULL, *args], cwd=ROOT, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    partial = [p for p in staging.iterdir() if p.name.startswith(PARTIAL)]
    done = {p: {f: f.stat().st_mtime_ns for f in p.rglob("*.dcm")} for p in staging.iterdir() if p.name[0] != "."}
    assert len(partial) == 1 and done  # one study was being written, at least one was complete

    result = _pull(pacs, staging)
    assert (result.fetched, result.already, sum(result.failed.values())) == (
        len(pacs.studies) - len(done),
        len(done),
        0,
    )
    assert not partial[0].exists()
    assert {p: {f: f.stat().st_mtime_ns for f in p.rglob("*.dcm")} for p in done} == done  # not fetched again
    assert set(_ledger(staging)) == set(map(pacs.key, pacs.studies))
    assert all(_dcm_count(staging / pacs.key(uid)) == study.n for uid, study in pacs.studies.items())


def test_failed_study_is_reported_and_fetched_next_time(pacs, tmp_path):
    staging, out = tmp_path / "staging", io.StringIO()
    blocked = max(pacs.studies, key=lambda u: pacs.studies[u].n)
    pacs.blocked.write_text(blocked + "\n")
    try:
        result = _pull(pacs, staging, Console(file=out, width=200))
    finally:
        pacs.blocked.unlink()
    assert (result.fetched, dict(result.failed)) == (4, {"HTTP_403": 1})
    assert result.failures == {pacs.key(blocked): "HTTP_403"}
    assert f"study {pacs.key(blocked)} not fetched: HTTP_403" in out.getvalue()
    assert blocked not in out.getvalue()
    assert pacs.key(blocked) not in _ledger(staging)
    assert sorted(p.name for p in staging.iterdir()) == sorted(
        [LEDGER, *(pacs.key(u) for u in pacs.studies if u != blocked)]
    )

    again = _pull(pacs, staging)
    assert (again.fetched, again.already, sum(again.failed.values())) == (1, 4, 0)


def test_a_lost_server_leaves_the_other_studies_for_the_next_pull(tmp_path):
    """The PACS dies while a study is being retrieved: that study and every one not yet fetched are
    reported (CONNECTION_LOST) without waiting on each in turn, nothing partial stays, and the next pull,
    with the server back, fetches exactly those."""
    payloads = [p.read_bytes() for src in SOURCES for p in sorted(src.rglob("*.dcm"))]
    studies = sorted({pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True).StudyInstanceUID for d in payloads})
    staging, out = tmp_path / "staging", io.StringIO()
    with orthanc(tmp_path / "pacs") as root:
        store(root, payloads)
        (tmp_path / "pacs" / "crash.txt").write_text(studies[1] + "\n")
        pacs = Pacs(f"{root}/dicom-web", root, tmp_path / "pacs" / "blocked.txt", {})
        lost = _pull(pacs, staging, Console(file=out, width=200))
    assert lost.found == len(studies) >= 3
    assert lost.failures[pacs.key(studies[1])] == "CONNECTION_LOST"
    assert lost.fetched + lost.failed["CONNECTION_LOST"] == len(studies) and lost.failed["CONNECTION_LOST"] >= 1
    assert "DICOMweb server lost" in out.getvalue() and studies[1] not in out.getvalue()
    fetched = set(_ledger(staging))
    assert len(fetched) == lost.fetched and not fetched & set(lost.failures)
    assert not [p for p in staging.iterdir() if p.name.startswith(PARTIAL)]

    (tmp_path / "pacs" / "crash.txt").unlink()
    with orthanc(tmp_path / "pacs") as root:  # the same storage: the server is back with its studies
        again = _pull(Pacs(f"{root}/dicom-web", root, tmp_path / "pacs" / "blocked.txt", {}), staging)
    assert (again.fetched, again.already, sum(again.failed.values())) == (len(lost.failures), lost.fetched, 0)


def test_a_study_the_server_is_too_slow_to_send_times_out_and_is_fetched_next_time(pacs, tmp_path):
    """A study not answered within ``timeout`` is reported TIMEOUT (its partial folder removed) and left
    out of the ledger; the next pull fetches it. (The server holds one request at a time while it waits,
    so a study asked for meanwhile may time out too; it is fetched next time the same way.)"""
    staging = tmp_path / "staging"
    slow = min(pacs.studies)
    (pacs.blocked.parent / "slow.txt").write_text(slow + "\n")
    try:
        result = _pull(pacs, staging, timeout=1)
    finally:
        (pacs.blocked.parent / "slow.txt").unlink()
    assert result.failures[pacs.key(slow)] == "TIMEOUT"
    assert set(result.failed) == {"TIMEOUT"} and result.fetched + result.failed["TIMEOUT"] == len(pacs.studies)
    assert not set(result.failures) & set(_ledger(staging))
    assert not [p for p in staging.iterdir() if p.name.startswith(PARTIAL)]
    again = _pull(pacs, staging)
    assert (again.fetched, again.already, sum(again.failed.values())) == (len(result.failures), result.fetched, 0)


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (date(2024, 1, 1), date(2024, 1, 31)),  # only the re-dated copy
        (date(2016, 1, 1), None),  # open-ended: 2016 and 2024
        (None, date(2015, 1, 1)),  # up to a day: 2014
        (date(2015, 12, 13), date(2015, 12, 13)),  # both ends inclusive
    ],
)
def test_date_range_selects_studies(pacs, tmp_path, since, until):
    wanted = pacs.between(since, until)
    assert 0 < len(wanted) < len(pacs.studies)  # each case selects some studies and excludes others
    result = _pull(pacs, tmp_path / "staging", since=since, until=until)
    assert (result.found, result.fetched) == (len(wanted), len(wanted))
    assert {p.name for p in (tmp_path / "staging").iterdir()} == {LEDGER, *map(pacs.key, wanted)}


def test_no_identifier_in_clear(pacs, tmp_path, caplog):
    staging, out = tmp_path / "staging", io.StringIO()
    staging.mkdir(mode=0o755)  # made beforehand (a configured folder), open to all: closed by the pull
    with caplog.at_level("DEBUG"):
        _pull(pacs, staging, Console(file=out, width=200, force_terminal=True))
    names = [str(p.relative_to(staging)) for p in staging.rglob("*")]
    seen = "\n".join([*names, (staging / LEDGER).read_text(), out.getvalue(), caplog.text]).lower()
    identifiers = set().union(*(s.identifiers for s in pacs.studies.values()))
    assert set(PATIENT) <= identifiers
    assert [i for i in identifiers if i.lower() in seen] == []
    assert oct((staging).stat().st_mode & 0o777) == "0o700"  # it holds the DICOM as the PACS has it


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("pacs.example/dicom-web", "DICOMweb URL must look like http://host:port/dicom-web"),
        ("http://medssl:s3cret@127.0.0.1:{closed}/dicom-web", "put no user name or password in the DICOMweb URL"),
        ("http://127.0.0.1:{closed}/dicom-web", "cannot reach DICOMweb server at http://127.0.0.1:"),
        ("{root}/no-such-root", "answered HTTP 404 to a QIDO-RS study search"),
        ("{root}", "answered HTTP 400 to a QIDO-RS study search: is it the DICOMweb root"),  # Orthanc's REST API
    ],
)
def test_unusable_server_is_one_clear_error(pacs, tmp_path, url, message):
    url = url.format(closed=free_port(), root=pacs.root)
    cfg = make_config([], tmp_path / "out", None, dicomweb={"url": url, "timeout": 5})
    with pytest.raises(IngestError, match=re.escape(message)) as err:
        run_ingest(cfg, Console(file=io.StringIO()))
    assert "\n" not in str(err.value) and "s3cret" not in str(err.value)


def test_range_must_be_ordered():
    with pytest.raises(ConfigError, match=r"invalid config at 'ingest\.dicomweb': .*since .* is after until"):
        load_config(None, {"ingest.dicomweb.since": "2024-02-01", "ingest.dicomweb.until": "2024-01-01"})


def test_other_key_is_refused(pacs, tmp_path):
    staging = tmp_path / "staging"
    _pull(pacs, staging, since=DATED)
    with pytest.raises(DicomwebError, match="another pseudonym key"):
        pull_studies(DicomwebConfig(url=pacs.url), staging, b"another key", Console(file=io.StringIO()))


def test_cli_pull_with_date_range(pacs, tmp_path, dask_scheduler):
    env = {**os.environ, "MEDSSL_PSEUDONYM_KEY": TEST_KEY, "COLUMNS": "200"}
    args = ["ingest", "--dicomweb", pacs.url, "--since", "2024-01-01", "--until", "2024-01-31"]
    args += ["--out", str(tmp_path / "out"), "--scheduler", dask_scheduler, "--no-tracking"]
    proc = subprocess.run([str(ROOT / ".venv/bin/medssl"), *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "PACS studies fetched" in proc.stderr and "1 (4 instances)" in proc.stderr
    assert {p.name for p in (tmp_path / "out" / "staging").iterdir()} == {LEDGER, pacs.key(*pacs.between(DATED, DATED))}

    bad = subprocess.run([str(ROOT / ".venv/bin/medssl"), *args[:4], "2024-13-01"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--since" in bad.stderr
