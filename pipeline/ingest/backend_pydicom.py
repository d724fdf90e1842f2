"""The reference header backend: pydicom parses the header, reading only the elements a classic image needs.

Mosaics (CSA header), Philips files (private scale) and enhanced objects are parsed whole, since what they
need lies beyond that list. This backend is also the fallback for every file the fast backend cannot read.
"""

from __future__ import annotations

from typing import IO, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline.ingest.backends import NUMBERS, Elements, ParsedHeader
from pipeline.ingest.frames import image_type_values

# What a classic header needs; parsing only these is several times faster than the whole header.
HEADER_TAGS = [
    "SpecificCharacterSet",
    "ImageType",
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "Manufacturer",
    "InstitutionName",
    "SeriesDescription",
    "PatientName",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "PhotometricInterpretation",
    *NUMBERS,
    "PerFrameFunctionalGroupsSequence",
    "DirectoryRecordSequence",
]


def _wrap(value: Any) -> Any:
    return [PydicomElements(item) for item in value] if isinstance(value, Sequence) else value


class PydicomElements:
    """:class:`~pipeline.ingest.backends.Elements` over a pydicom dataset.

    At the top level every element (file meta included) is converted once into a plain dict: pydicom's
    attribute lookup costs more than the parse. Sequence items are looked up directly.
    """

    __slots__ = ("_ds", "_values")

    def __init__(self, ds: Dataset, values: dict[str, Any] | None = None) -> None:
        self._ds = ds
        self._values = values

    def get(self, keyword: str, default: Any = None) -> Any:
        source = self._ds if self._values is None else self._values
        return _wrap(source.get(keyword, default))

    def __contains__(self, keyword: str) -> bool:
        return keyword in (self._ds if self._values is None else self._values)

    def sequence(self, keyword: str) -> list[Elements]:
        value = self.get(keyword)
        return value if isinstance(value, list) and all(isinstance(v, PydicomElements) for v in value) else []

    def private(self, group: int, element: int, creator: str) -> Any:
        try:
            return _wrap(self._ds.get_private_item(group, element, creator).value)
        except (KeyError, ValueError):
            return None

    def private_bytes(self, group: int, element: int, creator: str) -> bytes | None:
        value = self.private(group, element, creator)
        return value if isinstance(value, bytes) else None


def _needs_full_header(ds: Dataset) -> bool:
    """Mosaics (CSA header), Philips (private scale) and enhanced objects need elements beyond HEADER_TAGS."""
    image_type = image_type_values(ds.get("ImageType"))
    return (
        "MOSAIC" in image_type
        or str(ds.get("Manufacturer", "")).upper().startswith("PHILIPS")
        or "PerFrameFunctionalGroupsSequence" in ds
    )


def _transfer_syntax(ds: Dataset) -> str:
    meta = ds.get("file_meta")
    ts = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts is None:
        implicit, little = ds.original_encoding
        ts = (
            pydicom.uid.ImplicitVRLittleEndian
            if implicit
            else (pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian)
        )
    return str(ts)


class PydicomBackend:
    name = "pydicom"

    def parse(self, fp: IO[bytes], path: str, is_part10: bool) -> ParsedHeader:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not is_part10, specific_tags=HEADER_TAGS)
        if _needs_full_header(ds):
            fp.seek(0)
            ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not is_part10)
        values = {elem.keyword: elem.value for elem in ds.get("file_meta") or () if elem.keyword}
        values.update((elem.keyword, elem.value) for elem in ds if elem.keyword)
        implicit, little = ds.original_encoding
        return ParsedHeader(
            PydicomElements(ds, values), _transfer_syntax(ds), bool(implicit), little is not False, fp.tell()
        )


BACKEND = PydicomBackend()
