"""Discovery: every file under the sources, and its header read on the Dask workers, crash or no crash.

The header pass is where a native parser meets every file of the archive, so it is where a crash is
contained: a worker that dies costs its task's files a re-read with pydicom, never the batch, and no file
goes missing from the manifest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from distributed import KilledWorker, as_completed

from pipeline.data.reasons import Reason
from pipeline.ingest.backends import REFERENCE
from pipeline.ingest.headers import FileRecord, FileRejection, read_header

log = logging.getLogger(__name__)


def walk(sources: Iterable[Path], exclude: Path, skip_files: Iterable[Path] = ()) -> list[str]:
    """Every file under the sources, sorted, skipping hidden entries, the output folder and ``skip_files``."""
    exclude = exclude.resolve()
    skip = {str(Path(p).resolve()) for p in skip_files}
    found: list[str] = []
    for src in sources:
        src = Path(src)
        if not src.is_dir():
            found.append(str(src))
            continue
        for root, dirs, files in os.walk(src):
            root_path = Path(root)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d).resolve() != exclude)
            found.extend(
                str(root_path / f)
                for f in sorted(files)
                if not f.startswith(".") and not (skip and str((root_path / f).resolve()) in skip)
            )
    return found


def scan_files(paths: list[str], secret: bytes, image_extensions: tuple[str, ...], backend: str) -> list[FileRecord]:
    """Dask task: header-only read of a batch of files."""
    return [read_header(p, secret, image_extensions, backend) for p in paths]


def _crashed(path: str) -> FileRejection:
    detail = "reading its header crashed the worker process, with pydicom too"
    try:
        st = os.stat(path)
    except OSError:  # gone since: still named, never an error that stops the batch
        return FileRejection(path, 0, 0, Reason.CORRUPT_FILE, detail, path)
    return FileRejection(path, st.st_size, st.st_mtime_ns, Reason.CORRUPT_FILE, detail, path)


def scan(client: Any, chunks: list[list[str]], secret: bytes, exts: tuple[str, ...], backend: str) -> Iterator[Any]:
    """Header reads, one task per chunk, as they finish. A native crash must not take the batch down:
    a chunk whose worker died (Dask gives up on it with KilledWorker) is read again with pydicom; if pydicom
    dies on it too, each file is retried alone, and a file that still kills its worker is rejected by name."""
    futures = client.map(scan_files, chunks, secret=secret, image_extensions=exts, backend=backend, pure=False)
    tasks = {fut.key: (chunk, backend) for fut, chunk in zip(futures, chunks, strict=True)}
    pending = as_completed(futures)
    for fut in pending:
        chunk, used = tasks.pop(fut.key)
        try:
            batch = fut.result()
        except KilledWorker:
            if used == REFERENCE and len(chunk) == 1:
                batch = [_crashed(chunk[0])]
            else:
                log.warning("a worker died reading %d file(s) with %s: reading them with pydicom", len(chunk), used)
                for part in [chunk] if used != REFERENCE else [[p] for p in chunk]:
                    retry = client.submit(scan_files, part, secret, exts, REFERENCE, pure=False)
                    tasks[retry.key] = (part, REFERENCE)
                    pending.add(retry)
                fut.release()
                continue
        fut.release()
        yield batch
