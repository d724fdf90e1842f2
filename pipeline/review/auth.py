"""Readers, sessions and CSRF: who may read, and proof that a state change came from the page.

Tokens are hashed with scrypt under a salt drawn when the server starts, and the plain tokens are dropped:
a memory dump or a log holds no usable token, and every comparison is constant-time. A session is a random
cookie (HttpOnly, SameSite=Strict) whose sha256 alone is stored, with a per-session CSRF token the page
sends back in the ``X-CSRF-Token`` header on every state change: a cross-site form can neither read the
token nor set the header. Readers are known to the database and to MLflow by a keyed pseudonym of their
name, never by the name itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select

from pipeline.config import ReaderConfig
from pipeline.pseudonym import pseudonym
from pipeline.review.store import sessions

COOKIE = "medssl_review"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Reader:
    name: str
    pseudonym: str
    role: str


class Readers:
    """The readers of the config, each known by the hash of its token."""

    def __init__(self, configured: list[ReaderConfig], key: bytes) -> None:
        self._salt = secrets.token_bytes(16)
        self._by_hash = [
            (self._hash(r.token.get_secret_value()), Reader(r.name, pseudonym(key, "reader|" + r.name), r.role))
            for r in configured
        ]
        self.by_pseudonym = {reader.pseudonym: reader for _, reader in self._by_hash}

    def _hash(self, token: str) -> bytes:
        return hashlib.scrypt(token.encode(), salt=self._salt, n=2**14, r=8, p=1, dklen=32)

    def find(self, token: str) -> Reader | None:
        """The reader whose token this is; every stored hash is compared, so timing says nothing."""
        digest = self._hash(token)
        found = None
        for stored, reader in self._by_hash:
            if hmac.compare_digest(stored, digest):
                found = reader
        return found


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def open_session(engine: Engine, reader: Reader, hours: float) -> tuple[str, str]:
    """(cookie, CSRF token) of a new session; expired sessions are cleared on the way."""
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(delete(sessions).where(sessions.c.expires_at < now))
        conn.execute(
            insert(sessions).values(
                digest=_digest(cookie),
                reader=reader.pseudonym,
                csrf=csrf,
                expires_at=now + dt.timedelta(hours=hours),
            )
        )
    return cookie, csrf


def session(engine: Engine, cookie: str | None) -> tuple[str, str] | None:
    """(reader pseudonym, CSRF token) of a live session, or None."""
    if not cookie:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            select(sessions.c.reader, sessions.c.csrf, sessions.c.expires_at).where(
                sessions.c.digest == _digest(cookie)
            )
        ).first()
    if row is None or _aware(row.expires_at) < dt.datetime.now(dt.UTC):
        return None
    return row.reader, row.csrf


def close_session(engine: Engine, cookie: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(sessions).where(sessions.c.digest == _digest(cookie)))


def csrf_ok(expected: str, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(expected.encode(), sent.encode())


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
