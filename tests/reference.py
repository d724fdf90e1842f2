"""Where the reference NIfTIs in ../shared/data are, and how to compare ours with them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np


def _ref(stem: Path) -> Path:
    """A reference NIfTI, plain or gzipped (the bundled sample keeps them gzipped)."""
    gz = stem.with_name(stem.name + ".nii.gz")
    return gz if gz.exists() else stem.with_name(stem.name + ".nii")


@dataclass(frozen=True)
class Case:
    name: str
    inputs: Path
    refs: tuple[Path, ...]
    options: tuple[tuple[str, str], ...] = ()
    scaled: bool = True


def cases(root: Path) -> list[Case]:
    """Every reference conversion in ../shared/data that medssl must reproduce voxel for voxel."""
    out: list[Case] = []
    ts = root / "dcm_qa_ts"
    out += [Case(f"dcm_qa_ts/{n}", ts / "In" / f"{n}.dcm", (_ref(ts / "Ref" / str(n)),)) for n in range(1, 10)]
    b12 = root / "dcm_qa_12bit"
    out.append(Case("dcm_qa_12bit", b12 / "In", tuple(sorted((b12 / "Ref").glob("*.nii*")))))
    enh = root / "dcm_qa_enh"
    out.append(Case("dcm_qa_enh/Philips", enh / "In" / "Philips", tuple(sorted((enh / "Ref").glob("Philips*.nii*")))))
    out.append(
        Case("dcm_qa_enh/XA10", enh / "In" / "Siemens" / "XA10", tuple(sorted((enh / "Ref").glob("Siemens*.nii*"))))
    )
    nih = root / "dcm_qa_nih"
    for series, ref in [
        ("20180918GE/mr_0004", "DCM2NIIX_regression_test_4"),
        ("20180918GE/mr_0005", "DCM2NIIX_regression_test_5"),
        ("20180918Si/mr_0003", "EPI_PE=AP_3"),
        ("20180918Si/mr_0004", "EPI_PE=PA_4"),
        ("20180918Si/mr_0005", "EPI_PE=RL_5"),
        ("20180918Si/mr_0006", "EPI_PE=LR_6"),
    ]:
        out.append(Case(f"dcm_qa_nih/{series}", nih / "In" / series, (_ref(nih / "Ref" / ref),)))
    ct = root / "dcm_qa_ct"
    out.append(
        Case(
            "dcm_qa_ct/raw",
            ct / "In" / "GE",
            (ct / "Ref_generated" / "_2.nii.gz",),
            (("tilt", "raw"), ("nonuniform_spacing", "raw")),
        )
    )
    d2n = root / "dicom2nifti_testdata"
    for gt in sorted(d2n.rglob("*_ground_truth.nii.gz")):
        src = Path(str(gt).removesuffix("_ground_truth.nii.gz"))
        rel = str(src.relative_to(d2n))
        if rel in DICOM2NIFTI_ONLY:
            continue
        out.append(Case(f"dicom2nifti/{rel}", src, (gt,), scaled=rel not in DISPLAY_SCALING))
    return [c for c in out if c.inputs.exists() and all(r.exists() for r in c.refs)]


# dicom2nifti resampled these itself (its own tilt and slice-increment fixes); dcm2niix does not, and
# medssl rejects them by default: see test_expected_rejections.
DICOM2NIFTI_ONLY = {"failing/sliceincrement/002"}


# dicom2nifti writes Philips display values; dcm2niix (and medssl) the 'precise' values (PMC3998685).
# Stored values and geometry must still agree.
DISPLAY_SCALING = {"philips_enhanced/anatomical/001"}


def canonical(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Scaled voxels (channels last, trailing singleton dims dropped) and affine, in canonical RAS order."""
    img = nib.load(path)
    if img.get_data_dtype().names:
        raw = np.asarray(img.dataobj)
        # RGB only: dicom2nifti writes RGBA with an opaque alpha, dcm2niix RGB.
        data = np.stack([raw[n] for n in "RGB"], axis=-1).astype(np.float64)
    else:
        data = img.get_fdata(dtype=np.float64)
    ornt = nib.orientations.io_orientation(img.affine)
    data = nib.orientations.apply_orientation(data, ornt)
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt, img.shape)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data, affine


def match(ours: Path, ref: Path, scaled: bool = True) -> tuple[bool, float, str]:
    """(voxels equal, largest affine difference in mm, description) for one pair of NIfTI files.

    Equal means equal up to float32 rounding of the scaled values (rtol 1e-6), nothing looser.
    ``scaled=False`` allows one global factor, for a reference that chose another rescale convention.
    """
    a, aa = canonical(ours)
    b, ba = canonical(ref)
    if a.shape != b.shape:
        return False, float("inf"), f"shape {a.shape} vs {b.shape}"
    diff = float(np.abs(aa - ba).max())
    if not scaled and np.abs(a).max() > 0:
        a = a * (np.abs(b).max() / np.abs(a).max())
    equal = bool(np.array_equal(a, b)) or bool(np.allclose(a, b, rtol=1e-6, atol=0))
    return equal, diff, f"max voxel diff {np.abs(a - b).max():.3g}, affine diff {diff:.2g}"
