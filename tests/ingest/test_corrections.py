"""Tilt and equal-spacing corrections, checked against dcm2niix's _Tilt and _Tilt_Eq outputs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHARED, needs_shared
from reference import canonical

DCM2NIIX = shutil.which("dcm2niix") or str(ROOT / ".venv/bin/dcm2niix")


def dcm2niix(src: Path, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [DCM2NIIX, "-b", "n", "-z", "n", "-f", "s%s", "-o", str(out), str(src)], check=True, capture_output=True
    )
    return {p.name.removeprefix("s").split("_", 1)[-1] if "_" in p.name else "raw": p for p in out.glob("*.nii")}


def _ours(ingest, src: Path, tmp_path: Path, **opts) -> tuple[np.ndarray, np.ndarray, str]:
    _, manifest = ingest(src, out=tmp_path / "ours", **opts)
    (row,) = manifest.itertuples()
    assert row.status == "accepted", row.detail
    data, affine = canonical(tmp_path / "ours" / row.output_path)
    return data, affine, row.corrections


@needs_shared
def test_tilt_matches_dcm2niix_voxel_for_voxel(ingest, tmp_path):
    src = SHARED / "dicom2nifti_testdata/failing/gantrytilting/001"
    ref = next(p for p in dcm2niix(src, tmp_path / "ref").values() if p.name.endswith("_Tilt_1.nii"))
    ours, affine, corrections = _ours(ingest, src, tmp_path, tilt="resample")
    theirs, ref_affine = canonical(ref)
    assert corrections == "tilt_resampled"
    assert ours.shape == theirs.shape
    assert np.abs(affine - ref_affine).max() < 1e-3
    assert np.array_equal(ours, theirs)


@needs_shared
def test_tilt_and_equal_spacing_close_to_dcm2niix(ingest, tmp_path):
    """Same grid and affine as dcm2niix's _Tilt_Eq; voxels equal except one-row shifts at FOV borders."""
    src = SHARED / "dcm_qa_ct/In/GE"
    ref = next(p for p in dcm2niix(src, tmp_path / "ref").values() if p.name.endswith("_Tilt_Eq_1.nii"))
    ours, affine, corrections = _ours(ingest, src, tmp_path, tilt="resample", nonuniform_spacing="resample")
    theirs, ref_affine = canonical(ref)
    assert corrections == "tilt_resampled,spacing_resampled"
    assert ours.shape == theirs.shape == (512, 611, 56)
    assert np.abs(affine - ref_affine).max() < 1e-3
    assert np.mean(ours == theirs) > 0.99
    assert np.mean(np.abs(ours - theirs)) < 1.0  # HU


@pytest.mark.parametrize("policy", ["raw", "resample"])
def test_synthetic_tilt_is_recorded(policy, ingest, tmp_path):
    """On a real MR series sheared by 15 degrees, each policy writes a volume and records what it did."""
    from series_tools import copy_series
    from test_rejections import _shear

    src = copy_series(tmp_path / "in", _shear)
    _, manifest = ingest(src, tilt=policy)
    (row,) = manifest.itertuples()
    assert row.status == "accepted"
    assert row.corrections == {"raw": "tilt_raw", "resample": "tilt_resampled"}[policy]
    if policy == "resample":
        assert row.shape[1] > 256  # the grid grows to hold the sheared slices
