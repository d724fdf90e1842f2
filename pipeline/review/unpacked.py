"""Worklist scans kept verified and uncompressed on disk, so that opening one is a memory map.

Opening a gzip NIfTI for the first time means inflating it and checking its voxel digest: 0.7 s or more for
a 512x512x300 CT on two cores, most of it unavoidable, since the digest is over the whole volume. The page
must show a scan within 300 ms, so the server does that work before the reader asks: after it starts it
goes down the worklists in order and writes each verified scan here as a ``.npy``, which a request then maps
without reading it.

An entry is named by the scan's series key and a hash of what it was checked against: the manifest's digest
and the NIfTI's size and modification time. A NIfTI changed since then has another name, so its stale entry
is never used and the changed file goes through the full check again (and shows ``CHECKSUM_MISMATCH`` when
it fails). The scaling is in a JSON file written before the ``.npy``; both are written atomically, and an
entry counts only once its ``.npy`` is there. The folder belongs to the server: anyone who can write in it
can also rewrite the NIfTI files the digests protect.

The folder holds at most ``budget`` bytes (the voxels; each ``.npy`` adds a header of a hundred bytes or so):
to make room, scans least recently opened go first, never those the server's current pass has prepared.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_path
from pipeline.data.screen import Stored

Stamp = tuple[int, int]  # (size, mtime_ns) of the NIfTI


class Unpacked:
    def __init__(self, folder: Path, budget: int) -> None:
        self.folder = folder
        self.budget = budget
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)
        # What a killed server left: temp files of writes cut short, and scalings whose voxels never came.
        for left in folder.iterdir():
            if left.name.startswith(".") or (left.suffix == ".json" and not left.with_suffix(".npy").exists()):
                left.unlink(missing_ok=True)

    def _entry(self, key: str, sha256: str, stamp: Stamp) -> tuple[Path, Path]:
        """(voxels, scaling) files of the scan checked at ``stamp``."""
        tag = hashlib.sha256(f"{sha256}|{stamp[0]}|{stamp[1]}".encode()).hexdigest()[:16]
        return self.folder / f"{key}.{tag}.npy", self.folder / f"{key}.{tag}.json"

    def get(self, key: str, sha256: str, stamp: Stamp) -> Stored | None:
        """The scan's voxels (read-only, mapped) when it was verified at this stamp; None otherwise."""
        npy, scaling_file = self._entry(key, sha256, stamp)
        try:
            voxels = np.load(npy, mmap_mode="r")
            scaling = json.loads(scaling_file.read_text())
            os.utime(npy)  # recently opened: evicted last
        except (OSError, ValueError):
            return None
        return Stored(voxels, scaling["slope"], scaling["inter"])

    def put(self, key: str, sha256: str, stamp: Stamp, stored: Stored, protect: set[str]) -> bool:
        """Keep a verified scan, making room by dropping the least recently opened scans not in ``protect``;
        False (and nothing written) when the scans in ``protect`` leave no room for it. Older entries of the
        scan itself go. A scan larger than the whole budget is not kept (True: the others may still fit)."""
        if stored.voxels.nbytes > self.budget:
            return True
        with self._lock:
            entries = sorted(self._entries(), key=lambda e: e[2])
            stale = [npy for npy, _, _ in entries if npy.name.split(".", 1)[0] == key]
            others = [(npy, size) for npy, size, _ in entries if npy.name.split(".", 1)[0] != key]
            room = self.budget - sum(size for _, size in others)
            evict = []
            for npy, size in others:
                if room >= stored.voxels.nbytes:
                    break
                if npy.name.split(".", 1)[0] not in protect:
                    evict.append(npy)
                    room += size
            if room < stored.voxels.nbytes:
                return False
            for npy in stale + evict:
                self._drop(npy)
        npy, scaling_file = self._entry(key, sha256, stamp)
        with atomic_path(scaling_file) as tmp:
            tmp.write_text(json.dumps({"slope": stored.slope, "inter": stored.inter}))
        with atomic_path(npy) as tmp, open(tmp, "wb") as f:
            np.save(f, stored.voxels)
        return True

    def _entries(self) -> list[tuple[Path, int, int]]:
        """(path, size, last opened) of each kept ``.npy``; temp files (hidden) and vanished files left out."""
        found = []
        for npy in self.folder.glob("*.npy"):
            if npy.name.startswith("."):
                continue
            try:
                st = npy.stat()
            except FileNotFoundError:
                continue
            found.append((npy, st.st_size, st.st_mtime_ns))
        return found

    @staticmethod
    def _drop(npy: Path) -> None:
        npy.unlink(missing_ok=True)
        npy.with_suffix(".json").unlink(missing_ok=True)  # key.tag.npy -> key.tag.json
