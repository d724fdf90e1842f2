"""``medssl listen``: real associations from pynetdicom's SCU to the receiver, running in this process on a free
port; the CLI under SIGTERM/SIGINT and a real Orthanc sending a study are the slow ones.

What is sent is real DICOM from ``data/sample``: one MR slice in four transfer syntaxes (explicit little endian,
RLE, JPEG-LS, JPEG 2000) and a four-slice MR series.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import requests
from conftest import ROOT, SAMPLE, TEST_KEY, make_config
from orthanc import free_port, needs_orthanc, orthanc, store
from pydicom.uid import MPEG2MPML, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import ComprehensiveSRStorage, CTImageStorage, Verification
from rich.console import Console

from pipeline.config import Config, load_config
from pipeline.errors import ConfigError, ListenError
from pipeline.ingest import run_ingest
from pipeline.listen import Receiver
from pipeline.listen.receiver import OUT_OF_RESOURCES
from pipeline.orchestrate.schedule import daily_config
from pipeline.pseudonym import pseudonym

DAY = date(2026, 3, 14)
KEY = TEST_KEY.encode()
SYNTAXES = sorted((SAMPLE / "dcm_qa_ts" / "In").glob("*.dcm"))  # one slice in 4 transfer syntaxes
SERIES = sorted((SAMPLE / "dicom2nifti_testdata" / "generic" / "anatomical" / "001").glob("*.dcm"))
STUDY = SYNTAXES + SERIES


def _config(tmp: Path, port: int, **listen: object) -> Config:
    return load_config(
        None,
        {
            "schedule.incoming": str(tmp / "incoming"),
            "schedule.root": str(tmp / "batches"),
            "ingest.pseudonym_key": TEST_KEY,
            "tracking.enabled": False,
            "listen.port": port,
            **{f"listen.{k}": v for k, v in listen.items()},
        },
    )


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[Callable[..., tuple[Receiver, io.StringIO]]]:
    """Start a receiver (listen settings as keywords) filing under ``DAY``; yields (receiver, its console output)."""
    started: list[Receiver] = []

    def start(**listen: object) -> tuple[Receiver, io.StringIO]:
        out = io.StringIO()
        rx = Receiver(_config(tmp_path, free_port(), **listen), Console(file=out, width=200), today=lambda: DAY)
        rx.start()
        started.append(rx)
        return rx, out

    yield start
    for rx in started:
        rx.stop()


def _associate(
    rx: Receiver, paths: Sequence[Path] = (), ae_title: str = "PACS", extra: Sequence[tuple[str, str]] = ()
) -> Association:
    """An association from ``ae_title`` proposing each file's SOP class in its own transfer syntax."""
    ae = AE(ae_title=ae_title)
    contexts = {(str(h.SOPClassUID), str(h.file_meta.TransferSyntaxUID)) for h in map(_header, paths)}
    for sop_class, syntax in sorted(contexts | set(extra)) or [(Verification, ExplicitVRLittleEndian)]:
        ae.add_requested_context(sop_class, syntax)
    return ae.associate("127.0.0.1", rx.config.listen.port, ae_title=rx.config.listen.ae_title)


def _send(rx: Receiver, paths: list[Path], ae_title: str = "PACS") -> list[int]:
    """C-STORE each file as it is on disk (pynetdicom sends its encoded dataset), one association; statuses."""
    assoc = _associate(rx, paths, ae_title)
    assert assoc.is_established
    statuses = [assoc.send_c_store(path).Status for path in paths]
    assoc.release()
    return statuses


def _header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def _body(path: Path) -> bytes:
    """The encoded dataset of a DICOM file, after its preamble and file meta group."""
    data = path.read_bytes()
    return data[144 + _header(path).file_meta.FileMetaInformationGroupLength :]


def _filed(tmp: Path, path: Path) -> Path:
    """Where the receiver must file ``path``: keyed hashes of its UIDs under the day's folder."""
    h = _header(path)
    names = [
        pseudonym(KEY, f"{kind}|{uid}")
        for kind, uid in (("study", h.StudyInstanceUID), ("series", h.SeriesInstanceUID))
    ]
    return (
        tmp
        / "incoming"
        / DAY.isoformat()
        / names[0]
        / names[1]
        / f"{pseudonym(KEY, 'instance|' + h.SOPInstanceUID)}.dcm"
    )


def _files(tmp: Path) -> list[Path]:
    """Everything under the incoming folder, hidden temp files included."""
    return sorted(p for p in (tmp / "incoming").rglob("*") if p.is_file())


def _until(done: Callable[[], bool], what: str) -> None:
    """Wait for another thread to get somewhere; the deadline only bounds a hang."""
    deadline = time.monotonic() + 30
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _identifiers(paths: list[Path]) -> set[str]:
    return {
        str(v)
        for h in map(_header, paths)
        for v in (h.StudyInstanceUID, h.SeriesInstanceUID, h.SOPInstanceUID, h.PatientName, h.PatientID)
        if len(str(v)) >= 3
    }


def test_a_study_arrives_as_sent_under_keyed_names_and_the_daily_batch_ingests_it(tmp_path, listening, dask_scheduler):
    rx, out = listening()
    assert _send(rx, STUDY) == [0x0000] * len(STUDY)
    assert _files(tmp_path) == sorted(_filed(tmp_path, p) for p in STUDY)
    for path in STUDY:
        filed = _filed(tmp_path, path)
        assert _body(filed) == _body(path)  # the dataset byte for byte, in its own transfer syntax
        assert pydicom.dcmread(filed) == pydicom.dcmread(path)
        assert pydicom.dcmread(filed).file_meta.TransferSyntaxUID == _header(path).file_meta.TransferSyntaxUID
        assert (filed.stat().st_mode & 0o777) == 0o600

    assert _send(rx, SERIES[:2]) == [0, 0]  # re-sent: replaced, not doubled
    assert len(_files(tmp_path)) == len(STUDY)
    _until(lambda: rx.result.associations == 2, "both associations to end")
    assert (rx.result.received, rx.result.failed) == (len(STUDY) + 2, 0)
    said = out.getvalue()
    assert f"AE PACS: {len(STUDY)} instances received, 0 failed (released)" in said
    leaked = [s for s in _identifiers(STUDY) if s in said or any(s in str(p) for p in _files(tmp_path))]
    assert not leaked

    # The daily batch of DAY ingests what arrived as it ingests the files themselves.
    config = _config(tmp_path, rx.config.listen.port).model_copy(
        update={"dask": make_config([], tmp_path, dask_scheduler).dask}
    )
    day = daily_config(config, DAY)
    quiet = Console(file=io.StringIO())
    received = pd.read_parquet(run_ingest(day, quiet).manifest)
    direct = pd.read_parquet(
        run_ingest(
            make_config([p.parent for p in (SYNTAXES[0], SERIES[0])], tmp_path / "direct", dask_scheduler), quiet
        ).manifest
    )
    assert (received.status == "accepted").sum() == (direct.status == "accepted").sum() > 0
    assert sorted(received.voxel_sha256.dropna()) == sorted(direct.voxel_sha256.dropna())


def test_it_answers_c_echo(listening):
    rx, _ = listening()
    assoc = _associate(rx)
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_an_unknown_calling_ae_is_refused_when_allowed_aes_is_set(tmp_path, listening):
    rx, out = listening(allowed_aes=["PACS"])
    stranger = _associate(rx, SERIES[:1], ae_title="STRANGER")
    assert stranger.is_rejected
    assert _send(rx, SERIES[:1], ae_title="PACS") == [0]
    assert _files(tmp_path) == [_filed(tmp_path, SERIES[0])]
    assert rx.result.refused == 1
    assert "refused association from AE STRANGER: not in listen.allowed_aes" in out.getvalue()


def test_non_images_and_syntaxes_ingest_cannot_decode_are_refused_at_association(listening):
    rx, _ = listening()
    refused = [(ComprehensiveSRStorage, ExplicitVRLittleEndian), (CTImageStorage, MPEG2MPML)]
    assoc = _associate(rx, extra=[*refused, (CTImageStorage, ExplicitVRLittleEndian)])
    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    assoc.release()
    assert accepted == {(CTImageStorage, ExplicitVRLittleEndian)}


def _cut_short(assoc: Association, path: Path, how: str) -> None:
    """Send the C-STORE of ``path`` up to, not including, its last P-DATA fragment, then abort the association
    (A-ABORT) or drop the connection (the socket closed, as when the sender is killed)."""
    h = _header(path)
    request = C_STORE()
    request.MessageID, request.Priority = 1, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = h.SOPClassUID, h.SOPInstanceUID
    request.DataSet = io.BytesIO(_body(path))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == h.SOPClassUID)
    fragments = list(message.encode_msg(context.context_id, 16382))
    assert len(fragments) > 3, "the instance must span several fragments for a cut to fall inside it"
    if how == "abort":
        for fragment in fragments[:-1]:
            assoc.dul.send_pdu(fragment)
        assoc.abort()
        return
    sock = assoc.dul.socket.socket
    for fragment in fragments[:-1]:
        pdu = P_DATA_TF()
        pdu.from_primitive(fragment)
        sock.sendall(pdu.encode())
    sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("how", ["abort", "drop"])
def test_an_association_cut_mid_instance_leaves_no_file(tmp_path, listening, how):
    rx, out = listening()
    assoc = _associate(rx, SERIES[:1])
    _cut_short(assoc, SERIES[0], how)
    _until(lambda: rx.result.associations == 1, "the cut association to end")
    assert _files(tmp_path) == []  # neither the instance nor a temp file
    assert "AE PACS: 0 instances received, 0 failed (aborted)" in out.getvalue()
    assert _send(rx, SERIES[:1]) == [0]  # the sender's retry then lands whole
    assert _files(tmp_path) == [_filed(tmp_path, SERIES[0])]
    assert _body(_filed(tmp_path, SERIES[0])) == _body(SERIES[0])


def test_a_write_that_fails_answers_a_failure_status_and_leaves_nothing(tmp_path, listening):
    rx, out = listening()
    (tmp_path / "incoming" / DAY.isoformat()).write_text("a file where the day's folder should be")
    assert _send(rx, SERIES[:2]) == [OUT_OF_RESOURCES] * 2
    _until(lambda: rx.result.associations == 1, "the association to end")
    assert (rx.result.received, rx.result.failed) == (0, 2)
    assert _files(tmp_path) == [tmp_path / "incoming" / DAY.isoformat()]
    assert "AE PACS: 0 instances received, 2 failed (released)" in out.getvalue()


def test_what_keeps_it_from_starting_is_one_clear_error(tmp_path, listening):
    with pytest.raises(ListenError, match=r"set schedule\.incoming"):
        Receiver(load_config(None, {"schedule.root": str(tmp_path)}), Console(file=io.StringIO()))
    rx, _ = listening()
    taken = Receiver(_config(tmp_path, rx.config.listen.port), Console(file=io.StringIO()))
    with pytest.raises(ListenError, match=re.escape(f"cannot listen on 127.0.0.1:{rx.config.listen.port}: ")):
        taken.start()


@pytest.mark.parametrize("title", ["", " MEDSSL", "MEDSSL ", "A\\B", "X" * 17, "MÉDSSL"])
def test_an_ae_title_dicom_does_not_allow_is_a_config_error(title):
    with pytest.raises(ConfigError, match=r"listen\.ae_title"):
        load_config(None, {"listen.ae_title": title})
    with pytest.raises(ConfigError, match=r"listen\.allowed_aes"):
        load_config(None, {"listen.allowed_aes": ["PACS", title]})


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_command_stops_cleanly_on_a_signal(tmp_path, sig):
    port = free_port()
    config = tmp_path / "listen.yaml"
    config.write_text(
        f"schedule: {{incoming: {tmp_path / 'incoming'}, root: {tmp_path / 'batches'}}}\n"
        f"ingest: {{pseudonym_key: {TEST_KEY}}}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # --verbose: debug logging on, and still no identifier in the output.
    command = [sys.executable, "-m", "pipeline.cli", "-v", "listen", "--config", str(config), "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ae = AE(ae_title="PACS")
        ae.add_requested_context(_header(SERIES[0]).SOPClassUID, ExplicitVRLittleEndian)

        def up() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assoc = ae.associate("127.0.0.1", port, ae_title="MEDSSL")
            if assoc.is_established:
                assert assoc.send_c_store(SERIES[0]).Status == 0
                assoc.release()
            return assoc.is_released

        _until(up, "medssl listen to take an association")
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert re.search(r"AE PACS: 1 instances received, 0 failed \(released\)", output)
    assert "listen stopped: 1 associations (0 refused), 1 instances received, 0 failed" in output
    assert not [s for s in _identifiers(SERIES[:1]) if s in output]
    assert len(list((tmp_path / "incoming").rglob("*.dcm"))) == 1


@pytest.mark.slow
@needs_orthanc
def test_orthanc_routes_a_study_to_the_listener(tmp_path, listening):
    """Orthanc as the PACS: the listener registered as a DICOM modality (as ``DicomModalities`` in its config
    would), then the study sent with its REST ``/modalities/medssl/store``, C-ECHO first."""
    rx, out = listening(allowed_aes=["ORTHANC"])
    with orthanc(tmp_path / "orthanc") as root:
        store(root, [p.read_bytes() for p in STUDY])
        modality = {"AET": rx.config.listen.ae_title, "Host": "127.0.0.1", "Port": rx.config.listen.port}
        requests.put(f"{root}/modalities/medssl", json=modality, timeout=10).raise_for_status()
        requests.post(f"{root}/modalities/medssl/echo", json={}, timeout=30).raise_for_status()
        studies = requests.get(f"{root}/studies", timeout=10).json()
        sent = requests.post(f"{root}/modalities/medssl/store", json={"Resources": studies}, timeout=120)
        sent.raise_for_status()
    assert _files(tmp_path) == sorted(_filed(tmp_path, p) for p in STUDY)
    for path in STUDY:
        assert pydicom.dcmread(_filed(tmp_path, path)) == pydicom.dcmread(path)
    # Orthanc opens an association for the echo, then one per transfer syntax it sends in.
    line = re.compile(r" AE ORTHANC: (\d+) instances received, 0 failed \(released\)$", re.MULTILINE)
    _until(lambda: sum(map(int, line.findall(out.getvalue()))) == len(STUDY), "Orthanc's associations to end")
    assert len(out.getvalue().splitlines()) == len(line.findall(out.getvalue())) > 1
