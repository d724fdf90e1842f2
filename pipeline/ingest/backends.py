"""Header backends: the parsers ``read_header`` can hand a DICOM file to, behind one small interface.

pydicom is the reference and the fallback; dicomsdl (C++) reads a header 10-30x faster and is used when
installed. A backend only parses: it returns the file's elements (an :class:`Elements` view) and where its
pixel data element starts. Everything that decides what the file *is* (rejections, geometry, scaling, frame
groups) is shared code in ``headers`` and ``frames``, so both backends fill the same ``DicomHeader``. Backends
are registered by name and imported lazily, as pydicom registers its pixel decoders.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import IO, Any, Protocol

from pipeline.errors import IngestError

#: ``ingest.header_backend``: ``auto`` takes the first available of FAST_BACKENDS, else pydicom.
BACKENDS = {
    "pydicom": ("pipeline.ingest.backend_pydicom", "pydicom"),
    "dicomsdl": ("pipeline.ingest.backend_dicomsdl", "dicomsdl"),
}
FAST_BACKENDS = ("dicomsdl",)
REFERENCE = "pydicom"


# The numeric elements a classic header needs (geometry, frames, pixel layout, scaling): every backend reads
# them; each adds the text and sequences it reads its own way.
NUMBERS = [
    "SliceThickness",
    "SpacingBetweenSlices",
    "EchoNumbers",
    "AcquisitionNumber",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "TemporalPositionIdentifier",
    "SamplesPerPixel",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "NominalScannedPixelSpacing",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
]


class Elements(Protocol):
    """A parsed dataset or sequence item, looked up by DICOM keyword.

    Values come back as pydicom gives them in kind: ``str`` for text (a list where the element holds several
    values), numbers or number lists for binary and decimal VRs, ``bytes`` for OB/UN, a list of
    :class:`Elements` for a sequence; ``default`` where the element is absent.
    """

    def get(self, keyword: str, default: Any = None) -> Any: ...

    def __contains__(self, keyword: str) -> bool: ...

    def sequence(self, keyword: str) -> list[Elements]:
        """The items of a sequence; empty when it is absent or empty."""
        ...

    def private(self, group: int, element: int, creator: str) -> Any:
        """The value of private element ``(group, xx<element>)`` in the block reserved by ``creator``, or None."""
        ...

    def private_bytes(self, group: int, element: int, creator: str) -> bytes | None:
        """A private element's raw bytes (a binary payload such as Siemens' CSA header, whatever its VR)."""
        ...


@dataclass(slots=True)
class ParsedHeader:
    """What a backend hands back: the elements and how the file is encoded, with pixel data not read."""

    elements: Elements
    transfer_syntax: str
    implicit_vr: bool
    little_endian: bool
    pixel_position: int  # file offset of the pixel data element's tag (-1 when there are no file offsets)


class HeaderBackend(Protocol):
    """A parser ``read_header`` can use. ``parse`` may raise anything: the caller turns that into a rejection
    (pydicom) or a re-read with pydicom (any other backend)."""

    name: str

    def parse(self, fp: IO[bytes], path: str, is_part10: bool) -> ParsedHeader:
        """Parse the header of the file open at ``fp`` (positioned at 0), stopping before the pixel data."""
        ...


_loaded: dict[str, HeaderBackend] = {}


def is_available(name: str) -> bool:
    """Whether the package behind backend ``name`` is importable (checked without importing it)."""
    return importlib.util.find_spec(BACKENDS[name][1]) is not None


def resolve(name: str) -> str:
    """The backend ``ingest.header_backend`` names: ``auto`` picks the fast one when installed.

    Called on the client before the cluster starts, so a backend asked for by name but not installed is
    one clear error, not a fallback per file.
    """
    if name == "auto":
        return next((n for n in FAST_BACKENDS if is_available(n)), REFERENCE)
    if not is_available(name):
        raise IngestError(f"header backend {name!r} needs the {BACKENDS[name][1]} package: pip install {name}")
    return name


def get_backend(name: str) -> HeaderBackend:
    """The backend object of a resolved name, imported on first use (once per worker process)."""
    if name not in _loaded:
        module, _ = BACKENDS[name]
        _loaded[name] = importlib.import_module(module).BACKEND
    return _loaded[name]
