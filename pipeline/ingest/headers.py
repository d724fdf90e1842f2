"""Header-only reading of one file into a small, picklable record.

Discovery runs this on Dask workers for every file in the archive, so it must be cheap (no pixel decode)
and its result small (no arrays, no patient identifiers in clear). Every DICOM flavour is reduced here to a
list of :class:`Frame` records (one per 2D plane with its own position), so that grouping and stacking
treat classic slices, enhanced multi-frame objects and Siemens mosaics the same way.
"""

from __future__ import annotations

import functools
import os
import stat
import struct
from dataclasses import dataclass, field
from typing import IO

from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from pipeline.data.reasons import Reason, Rejected, describe
from pipeline.ingest.backends import REFERENCE, ParsedHeader, get_backend
from pipeline.ingest.filekinds import JPEG_MAGIC, NON_IMAGE_SOP_CLASSES, PNG_MAGIC, classify_non_dicom
from pipeline.ingest.frames import (
    Frame,
    classic_frames,
    enhanced_frames,
    image_type_values,
    integer,
    mosaic_frames,
    number,
)
from pipeline.pseudonym import pseudonym, scrub

# Modalities whose images are projections or 2D acquisitions: each file is one image, never a stack.
PLANAR_MODALITIES = frozenset({"CR", "DX", "MG", "US", "XA", "RF", "IO", "PX", "OT", "ES", "XC", "SM", "OP"})
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
COMPLEX_PARTS = {"M": "M", "MAGNITUDE": "M", "P": "P", "PHASE": "P", "R": "R", "REAL": "R", "I": "I", "IMAGINARY": "I"}


@dataclass(slots=True)
class DicomHeader:
    """What grouping and conversion need from one DICOM file.

    Patient and study are already keyed hashes and ``source_dir`` is scrubbed; ``path`` stays real because
    the conversion pass must open the file, and it never reaches an output.
    """

    path: str
    source_dir: str
    size: int
    mtime_ns: int
    sop_uid: str
    series_uid: str
    series_number: str
    patient: str
    study: str
    modality: str
    manufacturer: str
    institution: str
    description: str
    image_type: tuple[str, ...]
    transfer_syntax: str
    rows: int
    cols: int
    samples: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    pixel_offset: int
    little_endian: bool
    n_frames: int
    mosaic_grid: int
    planar: bool
    split: tuple[str, ...]
    slice_thickness: float
    frames: list[Frame] = field(default_factory=list)


@dataclass(slots=True)
class ImageFileHeader:
    """A PNG or JPEG given as input (public labeled datasets), sized and typed from its header."""

    path: str
    size: int
    mtime_ns: int
    format: str


@dataclass(slots=True)
class FileRejection:
    path: str
    size: int
    mtime_ns: int
    reason: Reason
    detail: str
    shown_path: str = ""  # the path as the manifest may show it: scrubbed of identifiers read from the file


FileRecord = DicomHeader | ImageFileHeader | FileRejection


def _complex_part(image_type: tuple[str, ...]) -> str:
    return next((COMPLEX_PARTS[v] for v in image_type[2:] if v in COMPLEX_PARTS), "")


DEFLATED = "1.2.840.10008.1.2.1.99"
PIXEL_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"}


def _check_pixel_element(fp: IO[bytes], parsed: ParsedHeader, size: int) -> int:
    """Reject a file whose pixel data element is missing or runs past the end of the file (truncated).

    Returns the file offset where native integer pixel values start, so the conversion pass can read them
    without parsing the header a second time; -1 where pydicom must decode (encapsulated, deflated, float).
    """
    if parsed.transfer_syntax == DEFLATED:  # pydicom inflated the stream into memory: no file offsets to check
        return -1
    start = parsed.pixel_position
    fp.seek(start)
    head = fp.read(12)
    order = "<" if parsed.little_endian else ">"
    if len(head) < 8:  # the header promised an image (Rows, Columns) and the file ends before its pixels
        raise Rejected(Reason.CORRUPT_FILE, "truncated: the file ends before its pixel data")
    group, elem = struct.unpack(order + "HH", head[:4])
    if (group, elem) not in {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}:
        raise Rejected(Reason.NOT_AN_IMAGE, "no pixel data element")
    # Some writers put an implicit-VR element header on the pixel data of an explicit-VR file; pydicom
    # reads those, so look at the bytes rather than trust the transfer syntax.
    implicit = parsed.implicit_vr or head[4:6] not in PIXEL_VRS
    if implicit:
        (length,) = struct.unpack(order + "I", head[4:8])
        value_start = start + 8
    else:
        (length,) = struct.unpack(order + "I", head[8:12])
        value_start = start + 12
    if length == 0xFFFFFFFF:  # encapsulated (compressed): the decoder will tell if it is cut short
        if size < value_start + 16:
            raise Rejected(Reason.CORRUPT_FILE, "truncated: encapsulated pixel data is cut off")
        return -1
    if value_start + length > size:
        raise Rejected(
            Reason.CORRUPT_FILE, f"truncated: pixel data needs {length} bytes, file has {size - value_start}"
        )
    return value_start if elem == 0x0010 else -1  # float pixel data (7FE0,0008/0009): pydicom decodes it


def read_header(
    path: str,
    key: bytes,
    image_extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg"),
    backend: str = REFERENCE,
) -> FileRecord:
    """Classify one file and read its header; never raises for bad input, returns a rejection instead.

    ``backend`` is a resolved name (``backends.resolve``). A file the fast backend fails on in any way,
    rejections included, is read again with pydicom, whose verdict is final: the fast backend can make a
    read faster, never change its outcome.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        return FileRejection(path, 0, 0, Reason.UNREADABLE_FILE, exc.strerror or type(exc).__name__, path)
    try:
        if not stat.S_ISREG(st.st_mode):
            raise Rejected(Reason.UNREADABLE_FILE, "not a regular file")
        return _read_header(path, st.st_size, st.st_mtime_ns, key, image_extensions, backend)
    except Rejected as rej:
        shown = scrub(path, rej.identifiers, key) if rej.identifiers else path
        return FileRejection(path, st.st_size, st.st_mtime_ns, rej.reason, rej.detail, shown)
    except PermissionError as exc:
        detail = exc.strerror or "permission denied"
        return FileRejection(path, st.st_size, st.st_mtime_ns, Reason.UNREADABLE_FILE, detail, path)
    except Exception as exc:  # a malformed header can raise anything from deep inside pydicom
        return FileRejection(path, st.st_size, st.st_mtime_ns, Reason.CORRUPT_FILE, describe(exc, path), path)


def _read_header(
    path: str, size: int, mtime_ns: int, key: bytes, image_extensions: tuple[str, ...], backend: str
) -> FileRecord:
    if size == 0:
        raise Rejected(Reason.CORRUPT_FILE, "zero-byte file")
    with open(path, "rb") as fp:
        head = fp.read(132)
        if head.startswith(PNG_MAGIC) or head.startswith(JPEG_MAGIC):
            return _read_image_file(path, size, mtime_ns)
        if os.path.splitext(path)[1].lower() in image_extensions:
            raise Rejected(Reason.CORRUPT_FILE, "image file extension but no PNG/JPEG signature")
        is_part10 = head[128:132] == b"DICM"
        # Files without the Part 10 preamble (old ACR-NEMA style) start with a group 0x0002/0x0008 tag.
        if not is_part10 and head[:2] not in (b"\x02\x00", b"\x08\x00", b"\x00\x08", b"\x00\x02"):
            raise classify_non_dicom(path, head)
        if backend != REFERENCE:
            fast = get_backend(backend)  # outside the try: a backend that cannot load is a bug, not a fallback
            try:
                fp.seek(0)
                return _dicom_record(fp, fast.parse(fp, path, is_part10), path, size, mtime_ns, key)
            except Exception:  # pydicom, the reference, reads it again and decides
                pass
        fp.seek(0)
        try:
            parsed = get_backend(REFERENCE).parse(fp, path, is_part10)
        except InvalidDicomError as exc:
            raise classify_non_dicom(path, head) from exc
        except (EOFError, struct.error, ValueError, OverflowError, KeyError) as exc:
            raise Rejected(Reason.CORRUPT_FILE, f"header unreadable: {type(exc).__name__}") from exc
        return _dicom_record(fp, parsed, path, size, mtime_ns, key)


def _dicom_record(fp: IO[bytes], parsed: ParsedHeader, path: str, size: int, mtime_ns: int, key: bytes) -> DicomHeader:
    """Decide what a parsed header is (an image, or a named rejection) and read it into a DicomHeader."""
    el = parsed.elements
    identifiers = [str(el.get(k, "") or "") for k in ("PatientName", "PatientID")]
    try:
        sop_class = str(el.get("SOPClassUID", "") or el.get("MediaStorageSOPClassUID", "") or "")
        if sop_class in NON_IMAGE_SOP_CLASSES or "DirectoryRecordSequence" in el:
            raise Rejected(Reason.NOT_AN_IMAGE, NON_IMAGE_SOP_CLASSES.get(sop_class, "DICOMDIR (media directory)"))
        if "Rows" not in el or "Columns" not in el:
            name = UID(sop_class).name if sop_class else el.get("Modality", "unknown object")
            raise Rejected(Reason.NOT_AN_IMAGE, f"no image ({name})")
        pixel_offset = _check_pixel_element(fp, parsed, size)
        return _dicom_header(path, size, mtime_ns, parsed, sop_class, key, pixel_offset, identifiers)
    except Rejected as rej:
        rej.identifiers = [i for i in identifiers if i]
        raise
    except Exception as exc:  # a malformed element deep in a parser; rejected here so the path is scrubbed
        rej = Rejected(Reason.CORRUPT_FILE, describe(exc, path))
        rej.identifiers = [i for i in identifiers if i]
        raise rej from exc


def _read_image_file(path: str, size: int, mtime_ns: int) -> ImageFileHeader:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return ImageFileHeader(path, size, mtime_ns, im.format or "")
    except (UnidentifiedImageError, OSError) as exc:
        raise Rejected(Reason.CORRUPT_FILE, f"image header unreadable: {describe(exc, path)}") from exc


def _check_decodable(ts: str) -> None:
    if (detail := _undecodable(ts)) is not None:
        raise Rejected(Reason.UNSUPPORTED_TRANSFER_SYNTAX, detail)


@functools.cache
def _undecodable(ts: str) -> str | None:
    """Why no installed plugin decodes transfer syntax ``ts``, or None. Asked for every file, answered once
    per syntax and process: pydicom's UID and decoder look-ups cost more than the rest of a fast header read
    of the common case."""
    uid = UID(ts)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        return f"no pixel decoder for {uid.name or ts}"
    if not decoder.is_available:
        missing = "; ".join(f"{k}: {', '.join(v)}" for k, v in decoder.missing_dependencies.items())
        return f"{uid.name}: no decoder plugin installed ({missing})"[:200]
    return None


def _dicom_header(
    path: str,
    size: int,
    mtime_ns: int,
    parsed: ParsedHeader,
    sop_class: str,
    key: bytes,
    pixel_offset: int,
    identifiers: list[str],
) -> DicomHeader:
    ts = parsed.transfer_syntax
    _check_decodable(ts)
    v = parsed.elements
    image_type = image_type_values(v.get("ImageType"))
    modality = str(v.get("Modality", "") or "")
    has_geometry = "ImagePositionPatient" in v and "ImageOrientationPatient" in v
    # Projections are single images; secondary captures too unless they carry slice geometry.
    planar = modality in PLANAR_MODALITIES or (sop_class.startswith(SECONDARY_CAPTURE_PREFIX) and not has_geometry)
    rows, cols = integer(v.get("Rows")), integer(v.get("Columns"))
    n_frames = max(1, integer(v.get("NumberOfFrames"), 1))
    if not planar and not has_geometry and "PerFrameFunctionalGroupsSequence" not in v:
        raise Rejected(Reason.MISSING_GEOMETRY, f"{modality or 'image'} without ImagePositionPatient/Orientation")
    header = DicomHeader(
        path=path,
        source_dir=scrub(os.path.dirname(path), identifiers, key),
        size=size,
        mtime_ns=mtime_ns,
        sop_uid=str(v.get("SOPInstanceUID", "")),
        series_uid=str(v.get("SeriesInstanceUID", "")),
        series_number=str(v.get("SeriesNumber", "") or ""),
        patient=pseudonym(key, str(v.get("PatientID", "") or v.get("PatientName", "") or "")),
        study=pseudonym(key, str(v.get("StudyInstanceUID", ""))),
        modality=modality,
        manufacturer=str(v.get("Manufacturer", "") or ""),
        institution=str(v.get("InstitutionName", "") or ""),
        description=scrub(str(v.get("SeriesDescription", "") or ""), identifiers, key),
        image_type=image_type,
        transfer_syntax=ts,
        rows=rows,
        cols=cols,
        samples=integer(v.get("SamplesPerPixel"), 1),
        photometric=str(v.get("PhotometricInterpretation", "") or ""),
        bits_allocated=integer(v.get("BitsAllocated"), 16),
        bits_stored=integer(v.get("BitsStored"), integer(v.get("BitsAllocated"), 16)),
        pixel_representation=integer(v.get("PixelRepresentation")),
        pixel_offset=pixel_offset,
        little_endian=parsed.little_endian,
        n_frames=n_frames,
        mosaic_grid=0,
        planar=planar,
        split=(str(integer(v.get("EchoNumbers"), 0)), _complex_part(image_type)),
        slice_thickness=number(v.get("SliceThickness"), 0.0),
    )
    if "PerFrameFunctionalGroupsSequence" in v:
        header.frames = enhanced_frames(v)
    elif "MOSAIC" in image_type:
        mosaic = mosaic_frames(v)
        if mosaic is None:
            raise Rejected(Reason.MISSING_GEOMETRY, "mosaic without a readable Siemens CSA header")
        header.mosaic_grid, header.frames = mosaic
        header.rows, header.cols = rows // header.mosaic_grid, cols // header.mosaic_grid
    else:
        header.frames = classic_frames(v, n_frames, planar)
    return header
