"""Make test inputs from real series: a copy with fresh UIDs, then one defect applied to it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from conftest import data_root
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

ANATOMICAL = "dicom2nifti_testdata/generic/anatomical/001"  # Siemens MR, 4 axial slices, in sample and shared


def real_series() -> Path:
    return data_root() / ANATOMICAL


def load_sorted(src: Path) -> list[Dataset]:
    """The series' datasets ordered along the slice normal."""
    dss = [pydicom.dcmread(p) for p in sorted(src.iterdir()) if p.is_file()]
    normal = np.cross(*np.reshape([float(v) for v in dss[0].ImageOrientationPatient], (2, 3)))
    return sorted(dss, key=lambda d: float(np.dot(normal, [float(v) for v in d.ImagePositionPatient])))


def copy_series(
    dst: Path, mutate: Callable[[list[Dataset]], list[Dataset]] | None = None, src: Path | None = None
) -> Path:
    """Write the real series into ``dst`` with new Series/SOP UIDs, after ``mutate`` changed the datasets."""
    dst.mkdir(parents=True, exist_ok=True)
    dss = load_sorted(src or real_series())
    series_uid = generate_uid()
    for ds in dss:
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for i, ds in enumerate(mutate(dss) if mutate else dss):
        ds.save_as(dst / f"slice{i:03d}.dcm", enforce_file_format=True)
    return dst


def slice_step(dss: list[Dataset]) -> np.ndarray:
    return np.subtract([float(v) for v in dss[1].ImagePositionPatient], [float(v) for v in dss[0].ImagePositionPatient])


def move(ds: Dataset, offset: np.ndarray) -> None:
    ds.ImagePositionPatient = [f"{float(v) + o:.6f}" for v, o in zip(ds.ImagePositionPatient, offset, strict=True)]
