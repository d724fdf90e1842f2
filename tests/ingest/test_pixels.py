"""Pixel handling beyond the reference suites: photometric interpretations, colour, planar modalities."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut
from pydicom.uid import generate_uid


def _single(manifest):
    (row,) = manifest[manifest.status == "accepted"].itertuples()
    return row


def _voxels(out, row) -> np.ndarray:
    img = nib.load(out / row.output_path)
    raw = np.asarray(img.dataobj)
    if raw.dtype.names:
        return np.stack([raw[c] for c in "RGB"], axis=-1)
    return np.asanyarray(img.dataobj.get_unscaled()) if hasattr(img.dataobj, "get_unscaled") else raw


def _save(ds, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_monochrome1_is_inverted(ingest, tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    stored = ds.pixel_array.copy()
    ds.PhotometricInterpretation = "MONOCHROME1"
    _save(ds, tmp_path / "in" / "m1.dcm")
    _, manifest = ingest(tmp_path / "in")
    row = _single(manifest)
    ours = _voxels(tmp_path / "out", row)[:, :, 0].T  # back to (rows, cols)
    expected = (-1 - stored.astype(np.int32)) if ds.PixelRepresentation else ((1 << ds.BitsStored) - 1 - stored)
    assert np.array_equal(ours, expected)


@pytest.mark.parametrize(
    "name",
    # SC_rgb_jpeg.dcm: an implicit-VR pixel element inside an explicit-VR file
    ["SC_rgb_rle.dcm", "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_jpeg.dcm"],
)
def test_colour_kept_as_rgb_channels(name, ingest, tmp_path):
    src = get_testdata_file(name)
    expected = pydicom.dcmread(src).pixel_array  # pydicom converts YBR to RGB
    (tmp_path / "in").mkdir()
    shutil.copy(src, tmp_path / "in" / name)
    _, manifest = ingest(tmp_path / "in")
    row = _single(manifest)
    assert row.dtype == "RGB24"
    ours = _voxels(tmp_path / "out", row)[:, :, 0].transpose(1, 0, 2)
    assert np.array_equal(ours, expected)


def test_palette_colour_applied(ingest, tmp_path):
    src = get_testdata_file("examples_palette.dcm")
    ds = pydicom.dcmread(src)
    expected = apply_color_lut(ds.pixel_array, ds)
    _save(ds, tmp_path / "in" / "palette.dcm")
    _, manifest = ingest(tmp_path / "in")
    row = _single(manifest)
    assert expected.dtype == np.uint16  # a 16-bit lookup table: kept at 16 bits on the vector axis
    ours = np.asarray(nib.load(tmp_path / "out" / row.output_path).dataobj)[:, :, 0, 0].transpose(1, 0, 2)
    assert np.array_equal(ours, expected)


def test_planar_modality_images_stand_alone(ingest, tmp_path):
    """Radiographs in one series are separate images, never a stack, even a copy with the same UID."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series = generate_uid()
    for i in range(2):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.Modality = "DX"
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        del ds.ImagePositionPatient, ds.ImageOrientationPatient
        _save(ds, tmp_path / "in" / f"dx{i}.dcm")
    shutil.copy(tmp_path / "in" / "dx0.dcm", tmp_path / "in" / "dx0_copy.dcm")  # same SOP UID, same folder
    _, manifest = ingest(tmp_path / "in")
    accepted = manifest[manifest.status == "accepted"]
    assert len(accepted) == 3
    for row in accepted.itertuples():
        assert list(row.shape) == [base.Columns, base.Rows, 1]
        assert row.modality == "DX"


def test_big_endian_decodes_as_little_endian(ingest, tmp_path):
    """Explicit VR big endian decodes to the same values as the little-endian copy of the same image."""
    le = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    _save(pydicom.dcmread(get_testdata_file("MR_small_bigendian.dcm")), tmp_path / "in" / "be.dcm")
    _, manifest = ingest(tmp_path / "in")
    row = _single(manifest)
    assert row.transfer_syntax == "1.2.840.10008.1.2.2"
    ours = _voxels(tmp_path / "out", row)[:, :, 0].T
    assert np.array_equal(ours, le.pixel_array)


def test_deflated_transfer_syntax(ingest, tmp_path):
    src = get_testdata_file("image_dfl.dcm")
    expected = pydicom.dcmread(src).pixel_array
    shutil.copy(src, tmp_path / "dfl.dcm")
    _, manifest = ingest(tmp_path / "dfl.dcm")
    row = _single(manifest)
    assert row.transfer_syntax == "1.2.840.10008.1.2.1.99"
    assert np.array_equal(_voxels(tmp_path / "out", row)[:, :, 0].T, expected)


def test_single_valued_image_type_is_one_value():
    from pipeline.ingest.frames import image_type_values

    assert image_type_values("localizer") == ("LOCALIZER",)
    assert image_type_values(["ORIGINAL", "PRIMARY"]) == ("ORIGINAL", "PRIMARY")
    assert image_type_values(None) == ()
