"""The fast header backend: dicomsdl (C++) parses the header, the shared code in ``headers`` reads it.

dicomsdl reads a GE header with its ~300 private elements in about 0.1 ms, where pydicom walks them in
Python for 1.5 ms. It is also known to crash the process on a truncated file and to abort on 32-bit RGB RLE
pixel data, and both crashes come from *pixel data*: so it is never allowed to touch it. The file is opened
with ``load_until`` just before (7FE0,0008) and no element past that tag is ever looked up (a lookup past
``load_until`` makes dicomsdl load the rest of the file). The pixel element's header is then read from the
file by the shared code, which rejects a truncated file before anything decodes it.

Whatever this backend cannot read exactly as pydicom would raises :class:`Unsupported`, and ``read_header``
re-reads the file with pydicom: files without a Part 10 header, deflated files, private elements that
dicomsdl gives as UN (pydicom types them from its private dictionary).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from typing import IO, Any

import dicomsdl
from pydicom.charset import convert_encodings, decode_bytes, default_encoding
from pydicom.values import TEXT_VR_DELIMS, convert_IS_string

from pipeline.ingest.backends import NUMBERS, Elements, ParsedHeader

dicomsdl.set_loglevel(dicomsdl.LogLevel.DISABLE)  # its errors are exceptions here; no copy on stderr
VR = dicomsdl.VR
# VRs as plain ints (``vr().value``): comparing or hashing dicomsdl's enum objects costs about a microsecond
# each in pybind11, and every element read made four or five of those.
NONE, SQ, UN = VR.NONE.value, VR.SQ.value, VR.UN.value
BYTES_VRS = {v.value for v in (VR.OB, VR.OW, VR.OD, VR.OF, VR.OL, VR.OV)}
LOAD_UNTIL = 0x7FE00007  # the last tag loaded: (7FE0,0008) float, (7FE0,0010) pixel data come after it
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
NATIVE = {IMPLICIT_LE, "1.2.840.10008.1.2.1", EXPLICIT_BE}


# Text is decoded from the raw bytes with pydicom's own rules (pydicom.values): its stripping, splitting and
# character sets decide patient pseudonyms and grouping keys, so they must match to the byte. The rules are
# restated here without pydicom's per-value validation and wrapper types, which cost more than the parse.
def _values(items: list[str]) -> Any:
    return items[0] if len(items) == 1 else items


def _decode(raw: bytes, encodings: list[str]) -> str:
    if raw.isascii() and b"\x1b" not in raw:  # no escape sequence: every character set reads ASCII alike
        return raw.decode("ascii")
    return decode_bytes(raw, encodings, TEXT_VR_DELIMS)


def _string(raw: bytes, encodings: list[str]) -> Any:  # AE AS CS DA DT TM UI: multi_string, convert_UI
    return _values(raw.decode(default_encoding).rstrip(" \x00").split("\\"))


def _text(raw: bytes, encodings: list[str]) -> Any:  # SH LO UC: convert_text
    return _values([v.rstrip("\0 ") for v in _decode(raw, encodings).split("\\")])


def _person_name(raw: bytes, encodings: list[str]) -> Any:  # PN: convert_PN (str of a PersonName)
    return _values(_decode(raw.rstrip(b"\x00 "), encodings).split("\\"))


def _single(raw: bytes, encodings: list[str]) -> str:  # LT ST UT UR: convert_single_string
    return _decode(raw, encodings).rstrip("\0 ")


@functools.lru_cache(maxsize=256)
def _integer_string(raw: bytes) -> Any:
    """SeriesNumber and other IS text as pydicom's IS, kept as written. pydicom validates each value (a few
    microseconds); a series repeats the same few values in every file, so each is converted once."""
    return convert_IS_string(raw, True)


TEXT: dict[int, Callable[[bytes, list[str]], Any]] = {
    **dict.fromkeys((VR.AE.value, VR.AS.value, VR.CS.value, VR.DA.value, VR.DT.value, VR.TM.value), _string),
    VR.UI.value: _string,
    **dict.fromkeys((VR.SH.value, VR.LO.value, VR.UC.value), _text),
    **dict.fromkeys((VR.LT.value, VR.ST.value, VR.UT.value, VR.UR.value), _single),
    VR.PN.value: _person_name,
    VR.IS.value: lambda raw, encodings: _integer_string(raw),
}
# Numbers read in one call when the file opens (text is never prefetched: see TEXT).
PREFETCH = NUMBERS


class Unsupported(Exception):
    """This file (or element) is left to pydicom, which reads it as the reference does."""


class SdlElements:
    """:class:`~pipeline.ingest.backends.Elements` over a dicomsdl dataset or sequence item.

    Values are kept once read (the shared code asks for some, PatientID or Manufacturer, more than once).
    """

    __slots__ = ("_ds", "_encodings", "_values")

    def __init__(self, ds: dicomsdl.DataSet, encodings: list[str], values: dict[str, Any] | None = None) -> None:
        self._ds = ds
        self._encodings = encodings  # the dataset's SpecificCharacterSet, which its items share
        self._values = values or {}  # prefetched or read: None means absent or empty, as pydicom's None

    def get(self, keyword: str, default: Any = None) -> Any:
        try:
            value = self._values[keyword]
        except KeyError:
            value = self._values[keyword] = self._element(self._ds.getDataElement(keyword))
        return default if value is None else value

    def __contains__(self, keyword: str) -> bool:
        if self._values.get(keyword) is not None:  # a value was read: the element is there
            return True
        return self._ds.getDataElement(keyword).vr().value != NONE

    def sequence(self, keyword: str) -> list[Elements]:
        value = self.get(keyword)
        return value if isinstance(value, list) and all(isinstance(v, SdlElements) for v in value) else []

    def private(self, group: int, element: int, creator: str) -> Any:
        elem = self._private(group, element, creator)
        return None if elem is None else self._element(elem)

    def private_bytes(self, group: int, element: int, creator: str) -> bytes | None:
        elem = self._private(group, element, creator)
        return None if elem is None or elem.vr().value == NONE else elem.toBytes()

    def _private(self, group: int, element: int, creator: str) -> dicomsdl.DataElement | None:
        for block in range(0x10, 0x100):
            reservation = self._ds.getDataElement((group << 16) | block)
            # A creator is LO; implicit VR files give it as UN bytes, read the same way.
            if reservation.vr().value != NONE and _text(reservation.toBytes(), self._encodings) == creator:
                return self._ds.getDataElement((group << 16) | (block << 8) | (element & 0xFF))
        return None

    def _element(self, elem: dicomsdl.DataElement) -> Any:
        vr = elem.vr().value
        if vr == NONE:
            return None
        if (text := TEXT.get(vr)) is not None:
            return text(elem.toBytes(), self._encodings)
        if vr == SQ:
            return [SdlElements(item, self._encodings) for item in elem.toSequence()]
        if vr == UN:
            raise Unsupported("an element of unknown VR")
        if vr in BYTES_VRS:
            return elem.toBytes()
        return elem.value()


class DicomsdlBackend:
    name = "dicomsdl"

    def parse(self, fp: IO[bytes], path: str, is_part10: bool) -> ParsedHeader:
        if not is_part10:
            raise Unsupported("no Part 10 header: pydicom infers the encoding")
        ds = dicomsdl.open_file(path, load_until=LOAD_UNTIL)
        top = SdlElements(ds, [])
        top._encodings = convert_encodings(top.get("SpecificCharacterSet"))
        ts = str(top.get("TransferSyntaxUID", ""))
        if not ts or ts == DEFLATED:
            raise Unsupported("no transfer syntax, or deflated: pixel offsets are pydicom's to find")
        values = dict(zip(PREFETCH, ds.getValues(PREFETCH), strict=True))
        top._values.update(values)
        little = ts != EXPLICIT_BE
        return ParsedHeader(top, ts, ts == IMPLICIT_LE, little, _pixel_position(fp, ds, values, ts, little))


def _pixel_position(fp: IO[bytes], ds: dicomsdl.DataSet, values: dict[str, Any], ts: str, little: bool) -> int:
    """Where the pixel data element starts: the header's end, found without walking every element.

    Native pixel data of the size the header declares is almost always the file's last element: check for
    its tag at ``size - length - header`` first. Otherwise (encapsulated, trailing padding, a truncated file)
    take the end of the last element dicomsdl loaded, which costs a walk over all of them.
    """
    size = fp.seek(0, 2)
    if ts in NATIVE and (length := _native_length(values)) > 0:
        order = "<" if little else ">"
        for header in (12, 8):
            pos = size - length - header
            if pos <= 0:
                break
            fp.seek(pos)
            head = fp.read(header)
            stated = struct.unpack(order + "I", head[-4:])[0]
            if struct.unpack(order + "HH", head[:4]) == (0x7FE0, 0x0010) and stated == length:
                return pos
    last = None
    for last in ds:  # noqa: B007 - the loop runs to find the last element loaded
        pass
    if last is None:
        raise Unsupported("no elements")
    return last.offset() + last.length()


def _native_length(values: dict[str, Any]) -> int:
    try:
        n = values["Rows"] * values["Columns"] * (values["SamplesPerPixel"] or 1) * (values["BitsAllocated"] // 8)
        frames = int(values["NumberOfFrames"] or 1)
    except (TypeError, ValueError):
        return 0
    return n * frames + (n * frames) % 2


BACKEND = DicomsdlBackend()
