"""Each defect gets its named reason, and the rest of the batch still converts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED, needs_shared
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid
from reference import match
from series_tools import copy_series, move, real_series, slice_step

from pipeline.data.reasons import Reason


def _drop_middle(dss):
    return [dss[0], *dss[2:]]


def _shift_one(dss):
    move(dss[2], slice_step(dss) * 0.4)
    return dss


def _shear(dss):
    col = np.array([float(v) for v in dss[0].ImageOrientationPatient[3:]])
    gap = float(np.linalg.norm(slice_step(dss)))
    for k, ds in enumerate(dss):
        move(ds, col * k * gap * np.tan(np.radians(15)))
    return dss


def _duplicate_position(dss):
    twin = pydicom.dcmread(pydicom.filebase.DicomBytesIO(_to_bytes(dss[1])))
    twin.SOPInstanceUID = generate_uid()
    twin.file_meta.MediaStorageSOPInstanceUID = twin.SOPInstanceUID
    return [*dss, twin]


def _to_bytes(ds) -> bytes:
    buf = pydicom.filebase.DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _tilt_one_orientation(dss):
    a = np.radians(5)
    dss[1].ImageOrientationPatient = [1, 0, 0, 0, f"{np.cos(a):.6f}", f"{np.sin(a):.6f}"]
    return dss


def _crop_one(dss):
    ds = dss[2]
    arr = ds.pixel_array[:-16, :-16].copy()
    ds.Rows, ds.Columns = arr.shape
    ds.PixelData = arr.tobytes()
    return dss


def _localizer(dss):
    for ds in dss:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    return dss


def _no_position(dss):
    for ds in dss:
        del ds.ImagePositionPatient
    return dss


def _hevc(dss):
    for ds in dss:
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.107"  # HEVC: pydicom has no decoder for it
        ds.PixelData = encapsulate([b"\x00" * 64])
    return dss


DEFECTS = {
    Reason.MISSING_SLICES: _drop_middle,
    Reason.NONUNIFORM_SPACING: _shift_one,
    Reason.GANTRY_TILT: _shear,
    Reason.DUPLICATE_SLICES: _duplicate_position,
    Reason.INCONSISTENT_ORIENTATION: _tilt_one_orientation,
    Reason.INCONSISTENT_SHAPE: _crop_one,
    Reason.LOCALIZER: _localizer,
    Reason.UNSUPPORTED_TRANSFER_SYNTAX: _hevc,
    Reason.MISSING_GEOMETRY: _no_position,
}


@pytest.mark.parametrize("reason", list(DEFECTS), ids=[r.value for r in DEFECTS])
def test_series_defect_gets_its_reason(reason, ingest, tmp_path):
    bad = copy_series(tmp_path / "in" / "bad", DEFECTS[reason])
    good = copy_series(tmp_path / "in" / "good")
    _, manifest = ingest(tmp_path / "in")
    rows = manifest.set_index("source_dir")
    assert reason.value in set(rows.loc[[str(bad)], "reason"]), manifest[["source_dir", "reason", "detail"]]
    assert (rows.loc[[str(good)], "status"] == "accepted").all()


def _bad_files(folder: Path) -> dict[str, str]:
    """Bad inputs beside good ones: name -> expected reason."""
    folder.mkdir(parents=True)
    real = next(p for p in sorted(real_series().iterdir()) if p.is_file())
    data = real.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) * 2 // 3])
    ds = pydicom.dcmread(real, stop_before_pixels=True)
    ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid()
    buf = pydicom.filebase.DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    (folder / "cut_before_pixels.dcm").write_bytes(buf.getvalue())  # Rows/Columns, then the file ends
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "random.dcm").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "notes.txt").write_text("scanner log: nothing to see\n")
    (folder / "dangling.dcm").symlink_to(folder / "does-not-exist.dcm")
    shutil.copy(get_testdata_file("DICOMDIR"), folder / "DICOMDIR")
    shutil.copy(get_testdata_file("reportsi.dcm"), folder / "report_sr.dcm")
    shutil.copy(get_testdata_file("rtstruct.dcm"), folder / "rtstruct.dcm")
    shutil.copy(get_testdata_file("MR_truncated.dcm"), folder / "mr_truncated.dcm")
    expected = {
        "truncated.dcm": Reason.CORRUPT_FILE,
        "cut_before_pixels.dcm": Reason.CORRUPT_FILE,
        "empty.dcm": Reason.CORRUPT_FILE,
        "random.dcm": Reason.CORRUPT_FILE,
        "notes.txt": Reason.NOT_AN_IMAGE,
        "dangling.dcm": Reason.UNREADABLE_FILE,
        "DICOMDIR": Reason.NOT_AN_IMAGE,
        "report_sr.dcm": Reason.NOT_AN_IMAGE,
        "rtstruct.dcm": Reason.NOT_AN_IMAGE,
        "mr_truncated.dcm": Reason.CORRUPT_FILE,
    }
    if os.geteuid() != 0:  # root reads anything, so a permission test only means something for a user
        locked = folder / "locked.dcm"
        locked.write_bytes(data)
        locked.chmod(0)
        expected["locked.dcm"] = Reason.UNREADABLE_FILE
    return {k: v.value for k, v in expected.items()}


def test_bad_files_named_while_batch_converts(ingest, tmp_path):
    good = copy_series(tmp_path / "in" / "good")
    expected = _bad_files(tmp_path / "in" / "bad")
    _result, manifest = ingest(tmp_path / "in")
    bad_rows = manifest[manifest.source_dir == str(tmp_path / "in" / "bad")]
    assert len(bad_rows) == len(expected)
    assert sorted(bad_rows.reason) == sorted(expected.values()), bad_rows[["reason", "detail"]]
    assert (bad_rows.detail != "").all()
    good_row = manifest[manifest.source_dir == str(good)]
    assert list(good_row.status) == ["accepted"]
    gt = real_series().parent / (real_series().name + "_ground_truth.nii.gz")
    equal, affine_diff, what = match(tmp_path / "out" / good_row.output_path.iloc[0], gt)
    assert equal and affine_diff < 1e-3, what


@needs_shared
@pytest.mark.parametrize(
    ("folder", "reason"),
    [
        ("dicom2nifti_testdata/failing/gantrytilting/001", Reason.GANTRY_TILT),
        ("dicom2nifti_testdata/failing/sliceincrement/002", Reason.GANTRY_TILT),
        ("dcm_qa_ct/In/GE", Reason.GANTRY_TILT),
    ],
)
def test_expected_rejections_in_shared(folder, reason, ingest):
    _, manifest = ingest(SHARED / folder)
    assert list(manifest.reason) == [reason.value]


@needs_shared
def test_nonuniform_spacing_named_once_tilt_is_allowed(ingest, tmp_path):
    """With tilt accepted, dcm_qa_ct's varying gaps (1.1 to 7.4 mm) are the next reason."""
    _, manifest = ingest(SHARED / "dcm_qa_ct/In/GE", tilt="raw")
    assert list(manifest.reason) == [Reason.NONUNIFORM_SPACING.value]
    _, manifest = ingest(SHARED / "dicom2nifti_testdata/failing/sliceincrement/002", tilt="raw", out=tmp_path / "o2")
    assert list(manifest.reason) == [Reason.MISSING_SLICES.value]


def test_a_single_valued_image_type_is_read_as_one_value(tmp_path):
    """pydicom gives a bare string for a one-valued ImageType; read as characters it would never match
    LOCALIZER or MOSAIC."""
    from pipeline.ingest.headers import read_header

    series = copy_series(tmp_path / "scout", lambda dss: [setattr(ds, "ImageType", "LOCALIZER") or ds for ds in dss])
    assert read_header(str(next(series.iterdir())), b"k" * 32).image_type == ("LOCALIZER",)
