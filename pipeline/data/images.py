"""2D image files and arrays in ingest's volume layout, shared by ingest and the served detector.

A PNG or JPEG (or an array of one) becomes ``(cols, rows, 1[, c])`` with its top row on the
anterior/superior side, the layout ingest writes to NIfTI; the served detector (``pipeline.registry.pyfunc``)
reads the file itself and must see the same array ingest would have written, or a model registered from
ingested images would score differently.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

COLOUR_MODES = ("RGBA", "LA", "P", "CMYK", "YCbCr")


def read_image(path: str | Path) -> np.ndarray:
    """Pixels of a PNG/JPEG as stored: grey ``(rows, cols)`` or colour ``(rows, cols, 3)``."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        colour = im.mode in COLOUR_MODES
        return np.asarray(im.convert("RGB") if colour else im.convert("L") if im.mode == "1" else im)


def volume_layout(pixels: np.ndarray) -> np.ndarray:
    """``(rows, cols[, c])`` -> ``(cols, rows, 1[, c])``; grey stored as three equal channels loses one."""
    if pixels.ndim == 3 and all(np.array_equal(pixels[..., 0], pixels[..., c]) for c in (1, 2)):
        pixels = pixels[..., 0]
    return np.ascontiguousarray(np.swapaxes(pixels, 0, 1)[:, :, None])
