"""NIfTI writing: .nii.gz deflated by ISA-L is plain gzip that nibabel and gzip read back voxel for voxel."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from pipeline.ingest.nifti import write_nifti


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_gzipped_volume_reads_back_voxel_equal_and_as_the_uncompressed_file(tmp_path, dtype):
    rng = np.random.default_rng(0)
    data = (rng.normal(100, 40, (40, 36, 12)) * np.linspace(0, 1, 12)).astype(dtype)  # compressible, not trivial
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    packed = write_nifti(tmp_path / "v.nii.gz", data, affine, slope=2.0, intercept=-5.0)
    raw = write_nifti(tmp_path / "v.nii", data, affine, slope=2.0, intercept=-5.0)
    assert packed == raw
    img = nib.load(tmp_path / "v.nii.gz")
    assert np.array_equal(np.asanyarray(img.dataobj.get_unscaled()), data)
    assert img.dataobj.slope == 2.0 and img.dataobj.inter == -5.0
    assert np.allclose(img.affine, affine)
    # The gzip member holds exactly the bytes nibabel writes for .nii: any gzip reader (dcm2niix's, zcat) opens it.
    assert gzip.decompress((tmp_path / "v.nii.gz").read_bytes()) == (tmp_path / "v.nii").read_bytes()
    assert (tmp_path / "v.nii.gz").stat().st_size < (tmp_path / "v.nii").stat().st_size
