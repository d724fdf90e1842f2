"""A real Orthanc with its DICOMweb plugin for the PACS tests: started on free 127.0.0.1 ports, stopped after.

Shared by the pull tests and the daily DAG test. Orthanc answers 403 to any GET whose URL holds a UID
listed in ``blocked.txt`` in its folder (its own Lua HTTP filter), so a failed retrieval is a real one; a
GET for a UID listed in ``crash.txt`` makes the server exit on the spot, as a PACS lost mid-pull; one for a
UID in ``slow.txt`` is held for 3 seconds before it is answered, as an overloaded PACS would. While
``stow.txt`` holds a number N, the STOW-RS requests (POSTs under ``/dicom-web/``) after the first N since the
file appeared are answered HTTP 500, as a PACS failing mid-publish (Orthanc turns a Lua error into a 500).

Logins: ``users`` turns on Orthanc's own HTTP basic authentication (``AuthenticationEnabled``,
``RegisteredUsers``). Orthanc has no bearer tokens of its own, so ``tokens`` makes the same Lua filter refuse
(403) any request whose ``Authorization`` header is not ``Bearer <one of them>``, read from ``tokens.txt``,
as an API gateway in front of a PACS would; the DICOMweb plugin behind it is Orthanc's own either way.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from pipeline.credentials import BearerAuth

ORTHANC = shutil.which("Orthanc")
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
needs_orthanc = pytest.mark.skipif(
    ORTHANC is None, reason="the Orthanc binary is absent (make system-deps installs orthanc, orthanc-dicomweb)"
)
FILTER = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  local t = io.open('{tokens}', 'r')
  if t ~= nil then
    local tokens = t:read('*a')
    t:close()
    local given, known = httpHeaders['authorization'], false
    for token in string.gmatch(tokens, '%S+') do
      if given == 'Bearer ' .. token then known = true end
    end
    if not known then return false end
  end
  local s = io.open('{stow}', 'r')
  if s == nil then
    stow_seen = 0
  elseif method == 'POST' and string.find(uri, '/dicom-web/', 1, true) then
    local limit = tonumber(s:read('*a'))
    s:close()
    stow_seen = (stow_seen or 0) + 1
    if limit ~= nil and stow_seen > limit then error('medssl test: the PACS fails to store') end
  else
    s:close()
  end
  local c = io.open('{crash}', 'r')
  if c ~= nil then
    local crash = c:read('*a')
    c:close()
    for uid in string.gmatch(crash, '%S+') do
      if method == 'GET' and string.find(uri, uid, 1, true) then os.exit(1) end
    end
  end
  local w = io.open('{slow}', 'r')
  if w ~= nil then
    local slow = w:read('*a')
    w:close()
    for uid in string.gmatch(slow, '%S+') do
      if method == 'GET' and string.find(uri, uid, 1, true) then
        local t = os.time()
        while os.time() - t < 3 do end
      end
    end
  end
  local f = io.open('{blocked}', 'r')
  if f == nil then return true end
  local blocked = f:read('*a')
  f:close()
  for uid in string.gmatch(blocked, '%S+') do
    if method == 'GET' and string.find(uri, uid, 1, true) then return false end
  end
  return true
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dated_copy(folder: Path, day: date, patient: tuple[str, str], seed: str) -> list[bytes]:
    """A real series under new UIDs (derived from ``seed``), StudyDate ``day`` and a made-up patient
    (name, ID): a study only a date range selects."""
    study, series = generate_uid(entropy_srcs=[seed]), generate_uid(entropy_srcs=[seed, "series"])
    out = []
    for i, path in enumerate(sorted(folder.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[study, str(i)])
        ds.StudyDate = day.strftime("%Y%m%d")
        ds.PatientName, ds.PatientID = patient
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def _start(tmp: Path, users: Mapping[str, str], tokens: Sequence[str]) -> tuple[subprocess.Popen, str]:
    """Start Orthanc on free 127.0.0.1 ports; its own storage, remote access refused, a login only when asked."""
    if not PLUGIN.exists():
        pytest.fail(f"Orthanc is installed but its DICOMweb plugin is not ({PLUGIN}): apt-get install orthanc-dicomweb")
    lua = FILTER
    for name in ("blocked", "crash", "slow", "tokens", "stow"):
        lua = lua.replace(f"{{{name}}}", str(tmp / f"{name}.txt"))
    (tmp / "filter.lua").write_text(lua)
    if tokens:
        (tmp / "tokens.txt").write_text("\n".join(tokens) + "\n")
    auth = login(users, tokens)
    for _attempt in range(3):  # a free port can be taken between the check and Orthanc's bind
        http, dicom = free_port(), free_port()
        config = {
            "Name": "medssl-test",
            "StorageDirectory": str(tmp / "db"),
            "IndexDirectory": str(tmp / "db"),
            "HttpPort": http,
            "DicomPort": dicom,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(users),
            "RegisteredUsers": dict(users),
            "Plugins": [str(PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "LuaScripts": [str(tmp / "filter.lua")],
        }
        (tmp / "orthanc.json").write_text(json.dumps(config))
        log = (tmp / "orthanc.log").open("w")
        proc = subprocess.Popen([str(ORTHANC), str(tmp / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
        root = f"http://127.0.0.1:{http}"
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if requests.get(f"{root}/system", auth=auth, timeout=1).ok:
                    return proc, root
            except requests.ConnectionError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
    pytest.fail(f"Orthanc did not start: {(tmp / 'orthanc.log').read_text()[-2000:]}")


def login(users: Mapping[str, str], tokens: Sequence[str]) -> requests.auth.AuthBase | None:
    """What the test's own requests send to an Orthanc started with these ``users`` or ``tokens``."""
    if users:
        return requests.auth.HTTPBasicAuth(*next(iter(users.items())))
    return BearerAuth(tokens[0]) if tokens else None


@contextmanager
def orthanc(tmp: Path, users: Mapping[str, str] | None = None, tokens: Sequence[str] = ()) -> Iterator[str]:
    """A running Orthanc in ``tmp``; yields its REST root (DICOMweb is ``<root>/dicom-web``). With ``users``
    (name -> password) it wants HTTP basic authentication; with ``tokens``, a bearer token (see above)."""
    tmp.mkdir(parents=True, exist_ok=True)
    proc, root = _start(tmp, users or {}, tokens)
    try:
        yield root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def store(root: str, payloads: list[bytes], auth: requests.auth.AuthBase | None = None) -> None:
    """Put DICOM instances into Orthanc (its REST ``/instances``), as a modality would send them."""
    for data in payloads:
        requests.post(f"{root}/instances", data=data, auth=auth, timeout=30).raise_for_status()
