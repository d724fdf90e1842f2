"""Pixel decoding: one file's stored values as an array, through pydicom's decoder plugins."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut

from pipeline.data.reasons import Reason, Rejected, describe
from pipeline.ingest.headers import DicomHeader

NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def _read_native(header: DicomHeader) -> np.ndarray | None:
    """Stored values straight from the file at the offset discovery recorded: no second header parse.

    Covers the common case (one sample, 8/16/32-bit, native transfer syntax); anything else returns None
    and goes through pydicom. Unused high bits are handled as pydicom does: masked for unsigned data,
    sign-extended for signed.
    """
    if (
        header.pixel_offset < 0
        or header.transfer_syntax not in NATIVE
        or header.samples != 1
        or header.bits_allocated not in (8, 16, 32)
        or header.photometric == "PALETTE COLOR"
    ):
        return None
    kind = "i" if header.pixel_representation else "u"
    dtype = np.dtype(f"{'<' if header.little_endian else '>'}{kind}{header.bits_allocated // 8}")
    count = header.rows * header.cols * header.n_frames * max(1, header.mosaic_grid) ** 2
    arr = np.empty(count, dtype=dtype)
    # Read straight into the array: np.fromfile costs twice as much for a slice of a few KB (a GE EPI file).
    with open(header.path, "rb") as fp:
        fp.seek(header.pixel_offset)
        if fp.readinto(arr) != arr.nbytes:  # a buffered readinto stops short only at the end of the file
            raise Rejected(Reason.CORRUPT_FILE, "pixel data shorter than the header declares")
    arr = arr.astype(dtype.newbyteorder("="), copy=False)
    unused = header.bits_allocated - header.bits_stored
    if 0 < unused < header.bits_allocated:
        if header.pixel_representation:
            arr = (arr << unused) >> unused
        else:
            arr = arr & np.array((1 << header.bits_stored) - 1, dtype=arr.dtype)
    shape = (header.rows * max(1, header.mosaic_grid), header.cols * max(1, header.mosaic_grid))
    return arr.reshape((header.n_frames, *shape))


def read_planes(header: DicomHeader) -> np.ndarray:
    """Return the file's planes as ``(planes, rows, cols[, samples])`` of stored values.

    Planes are frames for multi-frame objects and tiles for Siemens mosaics. MONOCHROME1 is inverted so
    that larger always means brighter; colour comes back as RGB whatever the stored photometry.
    """
    native = _read_native(header)
    if native is not None:
        return _planes(native, header)
    try:
        ds = pydicom.dcmread(header.path)
        arr = ds.pixel_array
    except Exception as exc:  # decoders raise many types for damaged streams
        raise Rejected(Reason.CORRUPT_FILE, f"pixel data undecodable: {describe(exc, header.path)}") from exc
    if header.photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if header.n_frames == 1 or arr.ndim == (2 if header.samples == 1 else 3):
        arr = arr[None]
    return _planes(arr, header)


def _planes(arr: np.ndarray, header: DicomHeader) -> np.ndarray:
    """(frames, rows, cols[, c]) -> planes: MONOCHROME1 inverted, mosaics cut into their tiles."""
    if header.photometric == "MONOCHROME1":
        arr = _invert(arr, header.bits_stored, header.pixel_representation)
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
