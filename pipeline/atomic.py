"""Atomic writes: a temp file in the destination folder, then ``os.replace``.

A killed run must never leave half a file behind, because the next run trusts whatever it finds on disk.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; move it onto ``dest`` only if the block succeeds.

    The temp name keeps ``dest``'s suffixes so that writers that choose a format by extension
    (nibabel's ``.nii.gz``, pandas' ``.parquet``) behave as they would on the real name.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(dest.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name.split('.')[0]}.", suffix=f".part{suffix}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_durable(dest: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically, and on disk before returning: the file is synced before the rename
    and its folder after it.

    For a copy whose sender forgets it once told it is stored (a C-STORE answered with success): a power cut
    after that answer must not lose the only copy, nor leave a renamed name over unwritten blocks.
    """
    dest = Path(dest)
    with atomic_path(dest) as tmp, tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    folder = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
