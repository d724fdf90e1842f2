"""The DICOMweb login is read from where the config points, refused when it lies open, and never shown.

These need no server: what reaches a real Orthanc is in tests/ingest/test_dicomweb_auth.py.
"""

from __future__ import annotations

import base64

import pytest
import requests

from pipeline.config import DicomwebAuthConfig
from pipeline.credentials import http_auth
from pipeline.errors import DicomwebError

SECRET = "pw-Kx4-never-shown"


def _header(cfg: DicomwebAuthConfig) -> str:
    """The Authorization header the session would send."""
    request = requests.Request("GET", "http://pacs.example/dicom-web/studies", auth=http_auth(cfg)).prepare()
    return request.headers["Authorization"]


def test_basic_from_the_environment_named_in_the_config(monkeypatch):
    monkeypatch.setenv("SITE_PACS_USER", "reader")
    monkeypatch.setenv("SITE_PACS_PASSWORD", f"{SECRET}-é")  # UTF-8 (RFC 7617), where latin-1 would fail
    cfg = DicomwebAuthConfig(method="basic", user_env="SITE_PACS_USER", password_env="SITE_PACS_PASSWORD")
    assert _header(cfg) == "Basic " + base64.b64encode(f"reader:{SECRET}-é".encode()).decode()


def test_bearer_from_a_closed_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"{SECRET}.x/y+z==\n")
    path.chmod(0o600)
    auth = http_auth(DicomwebAuthConfig(method="bearer", file=path))
    assert _header(DicomwebAuthConfig(method="bearer", file=path)) == f"Bearer {SECRET}.x/y+z=="
    assert SECRET not in repr(auth)
    assert http_auth(DicomwebAuthConfig()) is None  # method none: nothing sent


@pytest.mark.parametrize(
    ("method", "content", "mode", "message"),
    [
        ("basic", f"reader:{SECRET}", 0o644, r"readable by others \(mode 644\): chmod 600 "),
        ("basic", f"reader:{SECRET}", 0o640, r"readable by others \(mode 640\)"),
        ("basic", SECRET, 0o600, "must hold user:password for basic auth"),
        ("basic", f"reader:{SECRET}\nsecond line", 0o600, "must hold exactly one line"),
        ("bearer", f"{SECRET} Injected: header", 0o600, "is not one"),
        ("bearer", "", 0o600, "must hold exactly one line"),
    ],
)
def test_a_bad_credentials_file_is_one_line_without_its_content(tmp_path, method, content, mode, message):
    path = tmp_path / "login"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(DicomwebError, match=message) as err:
        http_auth(DicomwebAuthConfig(method=method, file=path))
    assert "\n" not in str(err.value) and SECRET not in str(err.value) and str(path) in str(err.value)


def test_a_missing_file_or_variable_names_itself(tmp_path, monkeypatch):
    with pytest.raises(DicomwebError, match=r"cannot read credentials file .*/absent: No such file"):
        http_auth(DicomwebAuthConfig(method="bearer", file=tmp_path / "absent"))
    monkeypatch.setenv("MEDSSL_DICOMWEB_USER", "reader")
    monkeypatch.delenv("MEDSSL_DICOMWEB_PASSWORD", raising=False)
    with pytest.raises(DicomwebError, match=r"method is basic, but \$MEDSSL_DICOMWEB_PASSWORD is not set"):
        http_auth(DicomwebAuthConfig(method="basic"))
