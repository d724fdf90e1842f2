"""The conversion pass reads native pixel data at the offset discovery recorded: same values as pydicom."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from conftest import data_root
from pydicom.data import get_testdata_file

from pipeline.ingest.headers import DicomHeader, read_header
from pipeline.ingest.pixels import _read_native

FILES = [p for p in sorted(data_root().rglob("*.dcm"))[:400]] + [
    get_testdata_file(n) for n in ("MR_small_bigendian.dcm", "MR_small_implicit.dcm", "CT_small.dcm")
]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p)[-40:])
def test_native_read_equals_pydicom(path):
    header = read_header(str(path), b"k")
    if not isinstance(header, DicomHeader):
        pytest.skip(f"not a convertible image: {header.reason}")
    ours = _read_native(header)
    if ours is None:
        pytest.skip("encapsulated or colour: decoded by pydicom")
    theirs = pydicom.dcmread(path).pixel_array
    assert np.array_equal(ours.reshape(theirs.shape), theirs)
