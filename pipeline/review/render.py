"""The scan as the pipeline sees it: ingest's NIfTI, checked against the manifest's voxel digest, drawn as
a PNG of one slice under a window.

A loaded scan is cached (least recently used dropped) with the file's size and modification time, so
scrolling through slices or changing the window reads nothing from disk; each request still looks at the
file, so a volume deleted or overwritten since answers its reason instead of a stale picture.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.data.reasons import Reason
from pipeline.data.screen import check_file
from pipeline.data.volumes import load_volume

# (level, width) in HU; the usual lung, soft-tissue and bone settings.
CT_PRESETS = {"lung": (-600.0, 1500.0), "soft-tissue": (40.0, 400.0), "bone": (400.0, 1800.0)}
# Modalities without an absolute scale: percentiles of the whole scan.
PERCENTILE_PRESETS = {"auto": (0.5, 99.5), "wide": (0.0, 100.0), "narrow": (5.0, 95.0)}


@dataclass(frozen=True)
class ScanFile:
    path: Path
    sha256: str
    modality: str


@dataclass
class Loaded:
    stamp: tuple[int, int]
    voxels: np.ndarray  # (C, X, Y, Z): a 2D image has one slice
    percentiles: dict[str, tuple[float, float]]


def presets(modality: str) -> list[str]:
    return list(CT_PRESETS if modality == "CT" else PERCENTILE_PRESETS)


class Renderer:
    def __init__(self, files: dict[str, ScanFile], cache_size: int) -> None:
        self.files = files
        self._cache: OrderedDict[str, Loaded] = OrderedDict()
        self._size = cache_size
        self._lock = threading.Lock()

    def load(self, key: str) -> Loaded | Reason:
        """The scan's voxels, from the cache while the file is unchanged; the screen's reason instead when
        the file is gone, unreadable or not the one ingest wrote."""
        scan = self.files[key]
        try:
            st = os.stat(scan.path)
        except FileNotFoundError:
            return Reason.MISSING_FILE
        stamp = (st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached.stamp == stamp:
                self._cache.move_to_end(key)
                return cached
        if (problem := check_file(str(scan.path), scan.sha256)) is not None:
            return problem[0]
        data = load_volume(scan.path)
        voxels = data if data.ndim == 4 else data[..., None]
        percentiles = {
            name: tuple(float(v) for v in np.percentile(voxels, bounds)) for name, bounds in PERCENTILE_PRESETS.items()
        }
        loaded = Loaded(stamp, voxels, percentiles)
        with self._lock:
            self._cache[key] = loaded
            self._cache.move_to_end(key)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return loaded

    def png(self, key: str, index: int, preset: str) -> bytes | Reason:
        """Slice ``index`` under ``preset`` as a PNG: rows top to bottom as ingest stores them, colour kept.
        A bad slice or preset is a ``ValueError`` (the request's fault, not the file's)."""
        loaded = self.load(key)
        if isinstance(loaded, Reason):
            return loaded
        modality = self.files[key].modality
        if preset not in presets(modality):
            raise ValueError(f"preset must be one of {', '.join(presets(modality))}")
        depth = loaded.voxels.shape[3]
        if not 0 <= index < depth:
            raise ValueError(f"slice must be in 0..{depth - 1}")
        plane = loaded.voxels[:, :, :, index]  # (C, X, Y)
        if modality == "CT":
            level, width = CT_PRESETS[preset]
            low, high = level - width / 2, level + width / 2
        else:
            low, high = loaded.percentiles[preset]
        scaled = np.clip((plane - low) / max(high - low, 1e-6), 0, 1)
        pixels = (np.transpose(scaled, (2, 1, 0)) * 255).round().astype(np.uint8)  # (rows, cols, C)
        image = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
