"""The scan as the pipeline sees it: ingest's NIfTI, checked against the manifest's voxel digest, drawn as
a PNG of one slice under a window.

A loaded scan is cached (least recently used dropped) with the file's size and modification time, so
scrolling through slices or changing the window reads nothing from disk; each request still looks at the
file, so a volume deleted or overwritten since answers its reason instead of a stale picture. Behind that
memory cache is the ``Unpacked`` folder: scans verified before (by ``prepare``, which the server runs down
the worklists when it starts), mapped from disk instead of inflated and checked again. The cache
holds the voxels as stored (a CT's int16, half of float32) with the header's scaling, read once for both the
digest check and the drawing; only the slice drawn is scaled, windowed and encoded, in one float32 pass.
Percentile windows are worked out on their first use: a CT never needs them.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.reasons import Reason
from pipeline.data.screen import Stored, read_checked
from pipeline.data.volumes import PERCENTILES, channels_first
from pipeline.review.unpacked import Stamp, Unpacked

log = logging.getLogger(__name__)
# (level, width) in HU; the usual lung, soft-tissue and bone settings.
CT_PRESETS = {"lung": (-600.0, 1500.0), "soft-tissue": (40.0, 400.0), "bone": (400.0, 1800.0)}
# Modalities without an absolute scale: percentiles of the whole scan.
PERCENTILE_PRESETS = {"auto": PERCENTILES, "wide": (0.0, 100.0), "narrow": (5.0, 95.0)}


@dataclass(frozen=True)
class ScanFile:
    path: Path
    sha256: str
    modality: str


@dataclass
class Loaded:
    stamp: Stamp
    stored: Stored  # voxels (C, X, Y, Z) as stored: a 2D image has one slice
    percentiles: dict[str, tuple[float, float]] | None = None

    def window(self, modality: str, preset: str) -> tuple[float, float]:
        """(low, high) of the preset in real-world values."""
        if modality == "CT":
            level, width = CT_PRESETS[preset]
            return level - width / 2, level + width / 2
        if self.percentiles is None:  # two threads may both work it out: the same figures either way
            stored = self.stored
            found = np.percentile(stored.voxels, list(PERCENTILE_PRESETS.values()), axis=None)
            self.percentiles = {  # sorted: a negative slope swaps the ends of a symmetric pair
                name: tuple(sorted(float(v) * stored.slope + stored.inter for v in pair))
                for name, pair in zip(PERCENTILE_PRESETS, found, strict=True)
            }
        return self.percentiles[preset]


def _arranged(stored: Stored) -> Stored:
    """(C, X, Y, Z) as ``load_volume`` lays it out (RGB24 as three channels, a 4D series' first volume),
    still in the stored type."""
    data = channels_first(stored.voxels)
    return Stored(data if data.ndim == 4 else data[..., None], stored.slope, stored.inter)


def presets(modality: str) -> list[str]:
    return list(CT_PRESETS if modality == "CT" else PERCENTILE_PRESETS)


@dataclass
class Prepared:
    """How far the server's pass down the worklists has got: scans verified and unpacked, of ``total``."""

    done: int = 0
    total: int = 0
    finished: bool = False


class Renderer:
    def __init__(self, files: dict[str, ScanFile], cache_size: int, unpacked: Unpacked | None = None) -> None:
        self.files = files
        self.unpacked = unpacked
        self.prepared = Prepared()
        self._cache: OrderedDict[str, Loaded] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()
        # One load at a time per scan: the page's prefetch, the server's pass and the reader opening that
        # scan must not each gunzip and check the same volume.
        self._loading: dict[str, threading.Lock] = {}

    def _stamp(self, key: str) -> Stamp | None:
        try:
            st = os.stat(self.files[key].path)
        except FileNotFoundError:
            return None
        return st.st_size, st.st_mtime_ns

    def _gate(self, key: str) -> threading.Lock:
        with self._lock:
            return self._loading.setdefault(key, threading.Lock())

    def _read(self, key: str, stamp: Stamp, keep: set[str] | None = None) -> Stored | Reason | None:
        """The scan arranged for drawing: mapped from the unpacked folder when it was verified at this
        stamp, else read and checked. With ``keep`` (the server's pass; a reader's request never waits for
        the write) a scan read is also unpacked, if room can be made without dropping those scans: None
        when it cannot."""
        scan = self.files[key]
        if self.unpacked is not None and (kept := self.unpacked.get(key, scan.sha256, stamp)) is not None:
            return kept
        found = read_checked(str(scan.path), scan.sha256)
        if isinstance(found, tuple):
            return found[0]
        arranged = _arranged(found)
        if keep is not None and self.unpacked is not None and scan.sha256:
            return arranged if self.unpacked.put(key, scan.sha256, stamp, arranged, keep) else None
        return arranged

    def load(self, key: str) -> Loaded | Reason:
        """The scan's voxels, from the cache while the file is unchanged; the screen's reason instead when
        the file is gone, unreadable or not the one ingest wrote."""
        stamp = self._stamp(key)
        if stamp is None:
            return Reason.MISSING_FILE
        if (cached := self._cached(key, stamp)) is not None:
            return cached
        with self._gate(key):
            if (cached := self._cached(key, stamp)) is not None:  # loaded while this request waited
                return cached
            found = self._read(key, stamp)
            if isinstance(found, Reason):
                return found
            loaded = Loaded(stamp, found)
            with self._lock:
                self._cache[key] = loaded
                self._cache.move_to_end(key)
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
            return loaded

    def prepare(self, keys: Iterable[str], stop: threading.Event) -> None:
        """Verify and unpack ``keys`` in the order readers will open them, so that a first image is a
        memory map; stops at the first scan the unpacked folder's budget cannot take without evicting one
        already prepared. Scans that fail their check are passed over: opening one shows its reason."""
        keys = list(dict.fromkeys(keys))
        self.prepared = Prepared(total=len(keys))
        done: set[str] = set()
        try:
            for key in keys:
                if stop.is_set() or self.unpacked is None:
                    break
                stamp = self._stamp(key)
                if stamp is not None and self.files[key].sha256:  # without a digest there is nothing to verify
                    with self._gate(key):
                        kept = self._read(key, stamp, keep=done)
                    if kept is None:
                        break  # the budget is full of scans this pass prepared
                done.add(key)
                self.prepared.done += 1
        except Exception:  # a full disk, a folder that cannot be written: the page must not wait forever
            log.exception("review: preparing the worklist scans stopped")
        finally:
            self.prepared.finished = True

    def _cached(self, key: str, stamp: tuple[int, int]) -> Loaded | None:
        with self._lock:
            cached = self._cache.get(key)
            if cached is None or cached.stamp != stamp:
                return None
            self._cache.move_to_end(key)
            return cached

    def png(self, key: str, index: int, preset: str) -> bytes | Reason:
        """Slice ``index`` under ``preset`` as a PNG: rows top to bottom as ingest stores them, colour kept.
        A bad slice or preset is a ``ValueError`` (the request's fault, not the file's)."""
        loaded = self.load(key)
        if isinstance(loaded, Reason):
            return loaded
        modality = self.files[key].modality
        if preset not in presets(modality):
            raise ValueError(f"preset must be one of {', '.join(presets(modality))}")
        voxels = loaded.stored.voxels
        depth = voxels.shape[3]
        if not 0 <= index < depth:
            raise ValueError(f"slice must be in 0..{depth - 1}")
        low, high = loaded.window(modality, preset)
        # stored -> real-world -> 0..255 folded into one multiply-add over the slice alone, in place.
        gain = 255 / max(high - low, 1e-6)
        pixels = voxels[:, :, :, index].astype(np.float32)  # (C, X, Y)
        pixels *= loaded.stored.slope * gain
        pixels += (loaded.stored.inter - low) * gain
        np.clip(pixels, 0, 255, out=pixels)
        np.rint(pixels, out=pixels)
        rows = np.transpose(pixels.astype(np.uint8), (2, 1, 0))  # (rows, cols, C)
        image = Image.fromarray(np.ascontiguousarray(rows[..., 0] if rows.shape[2] == 1 else rows))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=False, compress_level=1)
        return buffer.getvalue()
