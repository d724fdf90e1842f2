"""Keyed pseudonyms for patient identifiers.

A plain hash of a PatientID can be reversed by hashing every plausible ID; a keyed hash (HMAC-SHA256)
cannot without the key. The key comes from config or ``MEDSSL_PSEUDONYM_KEY``; when neither is set, a
random key is created once in the output folder (mode 600) so that re-runs give the same pseudonyms.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from pipeline.atomic import write_text

KEY_ENV = "MEDSSL_PSEUDONYM_KEY"
KEY_FILE = ".pseudonym_key"


def read_key(configured: str | None, out_dir: Path) -> bytes | None:
    """The pseudonym key an ingest output was made with: config, then environment, then its key file."""
    key = configured or os.environ.get(KEY_ENV)
    if key:
        return key.encode()
    path = out_dir / KEY_FILE
    return path.read_text(encoding="utf-8").strip().encode() if path.exists() else None


def resolve_key(configured: str | None, out_dir: Path) -> bytes:
    """Return the pseudonym key as ``read_key`` finds it, creating a random key file on first use."""
    if (key := read_key(configured, out_dir)) is not None:
        return key
    path = out_dir / KEY_FILE
    write_text(path, secrets.token_hex(32))
    path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip().encode()


def image_key(key: bytes, path: str | Path) -> str:
    """The manifest's ``series_key`` of a 2D image file: how a label CSV's path finds its ingested row."""
    return pseudonym(key, "image|" + str(Path(path).resolve()))


def label_key(key: bytes, path: str | Path) -> str:
    """The manifest's ``label_key``: which label CSV path (an image, a DICOM file or a series folder) labelled
    a row, so a later stage can go from a CSV row to its manifest row without a path in the manifest."""
    return pseudonym(key, "label|" + str(Path(path).resolve()))


def file_key(key: bytes, path: str | Path) -> str:
    """The ``series_key`` of a file rejected on its own (unreadable, not an image): how it is found again."""
    return pseudonym(key, "file|" + str(Path(path).resolve()))


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    """An HMAC already keyed: ingest hashes several values per file with one key, and keying (the padded
    inner and outer digests) is a third of the cost of a short value's HMAC; ``copy`` skips it."""
    return hmac.new(key, digestmod=hashlib.sha256)


def pseudonym(key: bytes, value: str, length: int = 16) -> str:
    """Keyed hash of ``value``; empty input stays empty so that 'unknown' is not mistaken for a person."""
    if not value:
        return ""
    h = _keyed(key).copy()
    h.update(value.encode())
    return h.hexdigest()[:length]


@functools.lru_cache(maxsize=1024)
def _scrubbers(key: bytes, identifiers: tuple[str, ...]) -> list[tuple[re.Pattern[str], str]]:
    """The patterns ``scrub`` applies for these identifiers, in its order, each with its pseudonym.

    The header pass scrubs two strings of every file with the same patient's identifiers; compiled once per
    patient (per worker), they cost a few regex substitutions a file instead of a dozen HMACs and compiles.
    """
    out = []
    for ident in identifiers:
        for variant in {ident, ident.replace("^", " "), ident.replace("^", "_"), ident.replace("^", "")}:
            if len(variant.strip()) >= 3:
                out.append((re.compile(re.escape(variant.strip()), re.IGNORECASE), pseudonym(key, ident)))
    return out


def scrub(text: str, identifiers: list[str], key: bytes) -> str:
    """Replace any identifier found in ``text`` (a path, a description) by its pseudonym.

    Archives are often laid out as ``/archive/DOE^JOHN/...``; the folder name must not reach the manifest.
    Identifiers shorter than 3 characters are left alone: they match everywhere and identify no one.
    """
    for pattern, replacement in _scrubbers(key, tuple(identifiers)):
        text = pattern.sub(replacement, text)
    return text
