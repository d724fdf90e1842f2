"""Build a benchmark corpus of a few thousand real DICOM files: copies of real series with fresh UIDs.

Each copy gets new Study/Series/SOP Instance UIDs and its own PatientID, so converters see distinct series
(dcm2niix is told to name outputs by SeriesInstanceUID, ``-f %j``). Pixel data and geometry are untouched.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from results import SHARED

# Real series that every converter in the comparison stacks without resampling (no tilt, no gaps).
SERIES = [
    "dcm_qa_nih/In/20180918GE/mr_0004",  # GE EPI, 150 classic slices, 4D
    "dcm_qa_nih/In/20180918GE/mr_0005",
    "dcm_qa_nih/In/20180918Si/mr_0003",  # Siemens mosaics, 4D
    "dcm_qa_nih/In/20180918Si/mr_0004",
    "dicom2nifti_testdata/generic/anatomical/001",  # 256x256 MR
    "dicom2nifti_testdata/siemens/anatomical/001",
    "dicom2nifti_testdata/ge/anatomical/001",
    "dicom2nifti_testdata/philips/anatomical/001",
    "dicom2nifti_testdata/generic/compressed_jpeg/001",  # JPEG lossless
    "dicom2nifti_testdata/generic/compressed_jpegls/001",  # JPEG-LS
    "dicom2nifti_testdata/generic/compressed_j2k/001",  # JPEG 2000
    "dicom2nifti_testdata/generic/compressed_rle/001",  # RLE
]


# Without the EPI and mosaic series: 256x256 slices only, many small series.
ANATOMICAL = [s for s in SERIES if s.startswith("dicom2nifti_testdata/")]
# An archive-sized corpus where start-up no longer counts (issue 22): GE EPI classic slices and the tilted GE
# head CT (178 files a copy; 113 copies = 20,114 files). medssl stacks the CT with --tilt raw
# --nonuniform-spacing raw, as dcm2niix writes it without its _Tilt/_Eq variants.
ARCHIVE = ["dcm_qa_nih/In/20180918GE/mr_0004", "dcm_qa_ct/In/GE"]
CORPORA = {"mixed": SERIES, "anatomical": ANATOMICAL, "archive": ARCHIVE}


def build(out: Path, copies: int, shared: Path = SHARED, series: list[str] = SERIES) -> int:
    if out.exists():
        shutil.rmtree(out)
    n = 0
    for c in range(copies):
        for s, rel in enumerate(series):
            study, series_uid = generate_uid(), generate_uid()
            dst = out / f"copy{c:03d}" / f"s{s:02d}"
            dst.mkdir(parents=True)
            for src in sorted((shared / rel).iterdir()):
                try:
                    ds = pydicom.dcmread(src)
                except pydicom.errors.InvalidDicomError:
                    continue
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
                ds.SOPInstanceUID = generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.PatientID = f"BENCH{c:04d}"
                ds.save_as(dst / src.name, enforce_file_format=True)
                n += 1
    return n


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--corpus", choices=sorted(CORPORA), default="mixed", help="which real series to copy")
    args = ap.parse_args()
    print(f"{build(args.out, args.copies, series=CORPORA[args.corpus])} files in {args.out}")
