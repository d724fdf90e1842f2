"""Header backends: dicomsdl fills every DicomHeader field exactly as pydicom does, or hands the file back.

Each file is read twice, by pydicom (the reference) and by dicomsdl with no fallback, and the records must be
equal field by field (geometry, scaling, frame groups, CSA mosaics, Philips private scale, pixel offset,
pseudonyms). A file dicomsdl cannot read must raise, so that ``read_header`` gives it to pydicom; the
whole-file record through ``read_header`` must then equal pydicom's too.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest
from conftest import SAMPLE, SHARED, needs_shared

from pipeline.data.reasons import Reason
from pipeline.errors import IngestError
from pipeline.ingest import backends
from pipeline.ingest.headers import DicomHeader, FileRejection, _dicom_record, read_header

KEY = b"k" * 32
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
needs_dicomsdl = pytest.mark.skipif(not backends.is_available("dicomsdl"), reason="dicomsdl is not installed")


def dicom_files(root: Path) -> list[Path]:
    """Every file under ``root`` that starts like DICOM (Part 10 preamble, or a bare group 0002/0008 tag)."""
    found = []
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            path = Path(folder) / name
            with open(path, "rb") as fp:
                head = fp.read(132)
            if head[128:132] == b"DICM" or head[:2] in (b"\x02\x00", b"\x08\x00"):
                found.append(path)
    return sorted(found)


def fast_read(path: Path) -> DicomHeader | FileRejection | None:
    """dicomsdl's own record (no pydicom fallback), or None where it hands the file back."""
    size = path.stat().st_size
    with open(path, "rb") as fp:
        is_part10 = fp.read(132)[128:132] == b"DICM"
        fp.seek(0)
        try:
            parsed = backends.get_backend("dicomsdl").parse(fp, str(path), is_part10)
            return _dicom_record(fp, parsed, str(path), size, path.stat().st_mtime_ns, KEY)
        except Exception:
            return None


def check_parity(files: list[Path]) -> tuple[int, int]:
    """Assert both backends agree on every file; return (images dicomsdl read itself, images)."""
    own = images = 0
    for path in files:
        reference = read_header(str(path), KEY, backend="pydicom")
        assert read_header(str(path), KEY, backend="dicomsdl") == reference, path
        fast = fast_read(path)  # a rejection is always pydicom's to make: None here
        if fast is not None:
            assert fast == reference, path
        own += fast is not None
        images += isinstance(reference, DicomHeader)
    return own, images


@needs_dicomsdl
@pytest.mark.parametrize("root", [SAMPLE, PYDICOM_FILES], ids=["sample", "pydicom-test-files"])
def test_dicomsdl_fills_every_field_as_pydicom_does(root):
    own, images = check_parity(dicom_files(root))
    # Not a parity won by falling back: dicomsdl itself read nearly every image (pydicom's test files include
    # images without a Part 10 header and deflated ones, which it hands back).
    assert own >= 0.9 * images, (own, images)


@pytest.mark.slow
@needs_shared
@needs_dicomsdl
def test_dicomsdl_parity_on_the_whole_shared_archive():
    own, images = check_parity(dicom_files(SHARED))
    assert images > 400 and own == images


@needs_dicomsdl
def test_truncated_file_is_rejected_by_name_without_crashing_the_process():
    """dicomsdl crashes (SIGSEGV) when it loads this file's pixel data; it is never allowed to. Were the screen
    gone, this test would take pytest down with it."""
    rec = read_header(str(PYDICOM_FILES / "MR_truncated.dcm"), KEY, backend="dicomsdl")
    assert isinstance(rec, FileRejection)
    assert rec.reason == Reason.CORRUPT_FILE and rec.detail.startswith("truncated")
    assert rec == read_header(str(PYDICOM_FILES / "MR_truncated.dcm"), KEY, backend="pydicom")


@needs_dicomsdl
def test_rle_32bit_rgb_header_reads_as_pydicom_does():
    """dicomsdl aborts the process decoding 32-bit RGB RLE; its header read never touches the pixel data."""
    for name in ("SC_rgb_rle_32bit.dcm", "SC_rgb_rle_32bit_2frame.dcm"):
        path = PYDICOM_FILES / name
        assert fast_read(path) == read_header(str(path), KEY, backend="pydicom")


def test_auto_picks_the_fast_backend_when_installed_and_pydicom_stays_available():
    expected = "dicomsdl" if backends.is_available("dicomsdl") else "pydicom"
    assert backends.resolve("auto") == expected
    assert backends.resolve("pydicom") == "pydicom"


def test_a_backend_asked_for_but_not_installed_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "dicomsdl", ("pipeline.ingest.backend_dicomsdl", "no_such_package_x"))
    assert backends.resolve("auto") == "pydicom"
    with pytest.raises(IngestError, match="pip install dicomsdl"):
        backends.resolve("dicomsdl")


@pytest.mark.parametrize("backend", ["pydicom", "auto"])
def test_ingest_gives_the_same_manifest_whichever_backend_reads_the_headers(ingest, tmp_path, backend):
    """make test without dicomsdl runs as ``pydicom`` does here; both must give the reference manifest."""
    sources = [SAMPLE / "dicom2nifti_testdata", SAMPLE / "dcm_qa_enh", SAMPLE / "dcm_qa_ts"]
    _, manifest = ingest(*sources, out=tmp_path / backend, header_backend=backend)
    _, reference = ingest(*sources, out=tmp_path / "reference", header_backend="pydicom")
    columns = ["series_key", "status", "reason", "shape", "spacing", "voxel_sha256", "patient", "study"]
    assert len(manifest) == len(reference) and (manifest.status == "accepted").sum() >= 5
    mine, theirs = (m.sort_values("series_key")[columns].astype(str).values.tolist() for m in (manifest, reference))
    assert mine == theirs
