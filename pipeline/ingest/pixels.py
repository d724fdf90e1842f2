"""Pixel decoding: one file's stored values as an array, through pydicom's decoder plugins."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut

from pipeline.ingest.headers import DicomHeader
from pipeline.ingest.reasons import Reason, Rejected


def read_planes(header: DicomHeader) -> np.ndarray:
    """Return the file's planes as ``(planes, rows, cols[, samples])`` of stored values.

    Planes are frames for multi-frame objects and tiles for Siemens mosaics. MONOCHROME1 is inverted so
    that larger always means brighter; colour comes back as RGB whatever the stored photometry.
    """
    try:
        ds = pydicom.dcmread(header.path)
        arr = ds.pixel_array
    except Exception as exc:  # decoders raise many types for damaged streams
        raise Rejected(Reason.CORRUPT_FILE, f"pixel data undecodable: {type(exc).__name__}: {exc}"[:200]) from exc
    if header.photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    elif header.photometric == "MONOCHROME1":
        arr = _invert(arr, int(ds.get("BitsStored", header.bits_allocated)), header.pixel_representation)
    if header.n_frames == 1 or arr.ndim == (2 if header.samples == 1 else 3):
        arr = arr[None]
    if header.mosaic_grid:
        arr = _tiles(arr[0], header.mosaic_grid, len(header.frames))
    return arr


def _invert(arr: np.ndarray, bits_stored: int, signed: int) -> np.ndarray:
    if signed:
        return (-1 - arr.astype(np.int32)).astype(arr.dtype)
    return ((1 << bits_stored) - 1 - arr.astype(np.int64)).astype(arr.dtype)


def _tiles(mosaic: np.ndarray, grid: int, n: int) -> np.ndarray:
    rows, cols = mosaic.shape[0] // grid, mosaic.shape[1] // grid
    return np.stack(
        [
            mosaic[(k // grid) * rows : (k // grid + 1) * rows, (k % grid) * cols : (k % grid + 1) * cols]
            for k in range(n)
        ]
    )
