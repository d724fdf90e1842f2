"""Reading ingest's NIfTI outputs as training arrays, and the intensity scale each modality needs.

Ingest keeps stored values, colour as RGB24 and 4D series as 4D; training wants float32, channels first,
one volume, and intensities in [0, 1] on a scale that means the same thing across scanners.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from monai.transforms import ScaleIntensityRange, ScaleIntensityRangePercentiles

# Hounsfield window for CT: air to dense bone. Other modalities have no absolute scale: percentiles.
CT_WINDOW = (-1000.0, 1000.0)
PERCENTILES = (0.5, 99.5)


def load_volume(path: str | Path, volume: int = 0) -> np.ndarray:
    """``(C, X, Y)`` for a 2D image (a single slice), ``(C, X, Y, Z)`` for a volume; real-world values.

    RGB24 becomes three channels; of a 4D series, ``volume`` picks one time point.
    """
    img = nib.load(path)
    rgb = bool(img.get_data_dtype().names)  # RGB24: a structured array, one field per channel
    raw = np.asarray(img.dataobj) if rgb else np.asarray(img.get_fdata(dtype=np.float32))
    data = channels_first(raw, volume).astype(np.float32, copy=False)
    if data.shape[3] == 1:
        data = data[..., 0]
    return np.ascontiguousarray(data)


def channels_first(data: np.ndarray, volume: int = 0) -> np.ndarray:
    """``(C, X, Y, Z)`` in the array's own type, as ingest's NIfTI holds it: RGB24 as three channels, and of a
    4D series the time point ``volume``. Training (``load_volume``) and the review page's viewer lay scans
    out alike."""
    data = np.stack([data[c] for c in "RGB"]) if data.dtype.names else data[None]
    return data[..., volume] if data.ndim == 5 else data  # (C, X, Y, Z, T)


def normalise(data: np.ndarray, modality: str) -> np.ndarray:
    """Intensities to [0, 1]: a fixed HU window for CT, the 0.5-99.5 percentiles for everything else."""
    if modality == "CT":
        scale = ScaleIntensityRange(*CT_WINDOW, b_min=0.0, b_max=1.0, clip=True)
    else:
        scale = ScaleIntensityRangePercentiles(*PERCENTILES, b_min=0.0, b_max=1.0, clip=True, channel_wise=True)
    return np.asarray(scale(data), dtype=np.float32)
