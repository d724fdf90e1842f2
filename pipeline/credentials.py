"""The login a DICOMweb server wants, read when a pull starts and held only by the HTTP session that sends it.

The config says how to log in (HTTP basic or a bearer token) and where the secrets are (the names of
environment variables, or a file), never the secrets themselves: the resolved config is logged with every
MLflow run, so a secret in it would be published there. A file must be closed to group and others (mode
600), as ssh demands of a private key; one that every account on the machine can read is refused rather
than used. Messages name the variable or the file, never what it holds, and nothing here logs.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import requests
from requests.auth import AuthBase, HTTPBasicAuth

from pipeline.config import DicomwebAuthConfig
from pipeline.errors import DicomwebError

# RFC 6750 section 2.1 (b64token): also what keeps a token from forging a second header line.
TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class BearerAuth(AuthBase):
    """``Authorization: Bearer <token>`` on every request: requests has HTTP basic built in, not this."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:  # a repr in a traceback or a debugger must not show the token
        return "BearerAuth(<hidden>)"


def source(cfg: DicomwebAuthConfig) -> str:
    """Where the credential comes from, for messages: the variables' names or the file's path."""
    if cfg.file is not None:
        return f"the file {cfg.file}"
    if cfg.method == "basic":
        return f"${cfg.user_env} and ${cfg.password_env}"
    return f"${cfg.token_env}"


def _from_env(name: str, method: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise DicomwebError(f"ingest.dicomweb.auth.method is {method}, but ${name} is not set (or set auth.file)")
    return value


def _from_file(path: Path) -> str:
    """The file's one line; refused unless it is a regular file closed to group and others."""
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode  # the file read, not whatever the path names a moment later
            if not stat.S_ISREG(mode):
                raise DicomwebError(f"credentials file {path} is not a regular file")
            if mode & 0o077:
                raise DicomwebError(
                    f"credentials file {path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 {path}"
                )
            data = f.read(65536)
    except OSError as exc:
        raise DicomwebError(f"cannot read credentials file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DicomwebError(f"credentials file {path} is not UTF-8 text") from None
    if not text or "\n" in text:
        raise DicomwebError(f"credentials file {path} must hold exactly one line")
    return text


def http_auth(cfg: DicomwebAuthConfig) -> AuthBase | None:
    """What a ``requests.Session`` needs as ``auth`` to log in as configured; None for ``method: none``."""
    if cfg.method == "none":
        return None
    if cfg.method == "basic":
        if cfg.file is not None:
            user, _, password = _from_file(cfg.file).partition(":")  # RFC 7617: a user name holds no colon
            if not user or not password:
                raise DicomwebError(f"credentials file {cfg.file} must hold user:password for basic auth")
        else:
            user, password = _from_env(cfg.user_env, "basic"), _from_env(cfg.password_env, "basic")
        return HTTPBasicAuth(user.encode(), password.encode())  # UTF-8 (RFC 7617 charset), not latin-1
    token = _from_file(cfg.file) if cfg.file is not None else _from_env(cfg.token_env, "bearer")
    if not TOKEN.fullmatch(token):
        raise DicomwebError(f"the bearer token in {source(cfg)} is not one (RFC 6750: letters, digits, -._~+/ and =)")
    return BearerAuth(token)
