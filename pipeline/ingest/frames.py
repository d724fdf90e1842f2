"""The planes of one DICOM object: where each 2D frame lies and how its values scale.

Classic slices, enhanced multi-frame objects (per-frame functional groups) and Siemens mosaics (CSA
header) all come out as a list of :class:`Frame`, so grouping and stacking treat them the same way. The
elements come through ``backends.Elements``, so every header backend fills the same frames. Values are read
defensively: a missing or malformed element gives a default or None, never an exception.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

with warnings.catch_warnings():  # nibabel warns about its DICOM *readers*; only the CSA parser is used here
    warnings.simplefilter("ignore", UserWarning)
    from nibabel.nicom import csareader

from pipeline.data.reasons import Reason, Rejected

if TYPE_CHECKING:
    from pipeline.ingest.backends import Elements


def image_type_values(value: object) -> tuple[str, ...]:
    """ImageType as a tuple of upper-case values (pydicom gives a bare string when it holds one value)."""
    values = [value] if isinstance(value, str) else (value or ())
    return tuple(str(x).upper() for x in values)  # type: ignore[union-attr]


@dataclass(slots=True)
class Frame:
    """One 2D plane: where it is, how its values scale, and how it orders in time at its position."""

    index: int
    ipp: tuple[float, float, float]
    iop: tuple[float, float, float, float, float, float]
    spacing: tuple[float, float]
    slope: float
    intercept: float
    temporal: tuple[float, ...]
    split: tuple[str, ...] = ()


def number(value: object, default: float = 0.0) -> float:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def integer(value: object, default: int = 0) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return default


def vector(value: object, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def first_item(ds: Elements | None, keyword: str) -> Elements | None:
    items = ds.sequence(keyword) if ds is not None else []
    return items[0] if items else None


def item_value(ds: Elements | None, keyword: str) -> object:
    """An element of an item that may be absent (a functional group missing from both places)."""
    return ds.get(keyword) if ds is not None else None


def precise_rescale(ds: Elements | None, slope: float, intercept: float, manufacturer: str) -> tuple[float, float]:
    """Rescale to apply; for Philips MR, the 'precise' floating-point values, as dcm2niix writes by default.

    Philips stores a private scale slope (2005,100E) beside the display rescale: precise value =
    (stored * RS + RI) / (RS * SS).
    """
    if not manufacturer.upper().startswith("PHILIPS"):
        return slope, intercept
    scale = number(ds.private(0x2005, 0x0E, "Philips MR Imaging DD 001") if ds is not None else None, 0.0)
    if scale == 0.0:
        return slope, intercept
    # In float32, in dcm2niix's order of operations, so the header scaling comes out bit-identical.
    rs, ri, ss = np.float32(slope), np.float32(intercept), np.float32(scale)
    p0 = (np.float32(0) * rs + ri) / (rs * ss)
    p1 = (np.float32(1) * rs + ri) / (rs * ss)
    if p1 - p0 == rs and p0 == ri:
        return slope, intercept
    return float(p1 - p0), float(p0)


def pixel_spacing(ds: Elements | None) -> tuple[float, float] | None:
    if ds is None:
        return None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        if (sp := vector(ds.get(keyword), 2)) is not None and sp[0] > 0 and sp[1] > 0:
            return (sp[0], sp[1])
    return None


def temporal_key(ds: Elements, frame: int) -> tuple[float, ...]:
    """Ordering key among frames that share one position (the volumes of a 4D series)."""
    return (
        number(ds.get("TemporalPositionIdentifier")),
        number(ds.get("AcquisitionNumber")),
        number(ds.get("InstanceNumber")),
        float(frame),
    )


def image_rescale(v: Elements) -> tuple[float, float]:
    """The image-level rescale (1, 0 when absent), Philips precise where it applies."""
    slope = number(v.get("RescaleSlope"), 1.0) or 1.0
    return precise_rescale(v, slope, number(v.get("RescaleIntercept"), 0.0), str(v.get("Manufacturer", "")))


def slice_step(v: Elements) -> float:
    """Distance between frames stacked by a header rule rather than by per-frame positions."""
    return number(v.get("SpacingBetweenSlices")) or number(v.get("SliceThickness")) or 1.0


def classic_frames(v: Elements, n_frames: int, planar: bool) -> list[Frame]:
    """Frames of a classic image (single frame, or legacy multi-frame without functional groups)."""
    ipp = vector(v.get("ImagePositionPatient"), 3)
    iop = vector(v.get("ImageOrientationPatient"), 6)
    spacing = pixel_spacing(v) or (1.0, 1.0)
    slope, intercept = image_rescale(v)
    if planar or ipp is None or iop is None:
        # No patient geometry: a planar image (or cine) laid out on a default axial grid.
        return [
            Frame(f, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), spacing, slope, intercept, temporal_key(v, f))
            for f in range(n_frames)
        ]
    if n_frames == 1:
        return [Frame(0, ipp, iop, spacing, slope, intercept, temporal_key(v, 0))]
    # Legacy multi-frame without per-frame groups: frames are slices SpacingBetweenSlices apart.
    step = slice_step(v)
    normal = np.cross(iop[:3], iop[3:])
    return [
        Frame(
            f,
            tuple(float(x) for x in np.add(ipp, f * step * normal)),
            iop,
            spacing,
            slope,
            intercept,
            temporal_key(v, f),
        )
        for f in range(n_frames)
    ]


def mosaic_frames(ds: Elements) -> tuple[int, list[Frame]] | None:
    """Siemens mosaic: one stored image tiles n slices; positions come from the CSA header."""
    try:
        csa = csareader.read(ds.private_bytes(0x0029, 0x10, "SIEMENS CSA HEADER"))
        n = csareader.get_n_mosaic(csa)
        normal = csareader.get_slice_normal(csa)
    except Exception:
        return None
    ipp = vector(ds.get("ImagePositionPatient"), 3)
    iop = vector(ds.get("ImageOrientationPatient"), 6)
    spacing = pixel_spacing(ds)
    if not n or ipp is None or iop is None or spacing is None:
        return None
    grid = math.ceil(math.sqrt(n))
    rows, cols = integer(ds.get("Rows")), integer(ds.get("Columns"))
    tile_r, tile_c = rows / grid, cols / grid
    row_dir, col_dir = np.array(iop[:3]), np.array(iop[3:])
    # The stored position is the mosaic's corner; move it to the first tile's corner.
    origin = np.array(ipp) + row_dir * spacing[1] * (cols - tile_c) / 2 + col_dir * spacing[0] * (rows - tile_r) / 2
    if normal is None:
        normal = np.cross(row_dir, col_dir)
    step = slice_step(ds)
    slope, intercept = image_rescale(ds)
    frames = [
        Frame(
            k,
            tuple(float(v) for v in origin + k * step * np.asarray(normal, float)),
            iop,
            spacing,
            slope,
            intercept,
            (*temporal_key(ds, k)[:3], 0.0),
        )
        for k in range(n)
    ]
    return grid, frames


def enhanced_frames(ds: Elements) -> list[Frame]:
    """Enhanced multi-frame: geometry and scaling per frame from the functional groups (per-frame, then shared)."""
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    manufacturer = str(ds.get("Manufacturer", ""))
    top_slope = number(ds.get("RescaleSlope"), 1.0) or 1.0
    top_intercept = number(ds.get("RescaleIntercept"), 0.0)
    frames = []
    for f, item in enumerate(ds.sequence("PerFrameFunctionalGroupsSequence")):

        def group(keyword: str, item: Elements = item) -> Elements | None:
            return first_item(item, keyword) or first_item(shared, keyword)

        ipp = vector(item_value(group("PlanePositionSequence"), "ImagePositionPatient"), 3)
        iop = vector(item_value(group("PlaneOrientationSequence"), "ImageOrientationPatient"), 6)
        if ipp is None or iop is None:
            raise Rejected(Reason.MISSING_GEOMETRY, f"frame {f + 1} has no plane position/orientation")
        spacing = pixel_spacing(group("PixelMeasuresSequence")) or pixel_spacing(ds) or (1.0, 1.0)
        pvt = group("PixelValueTransformationSequence")
        philips = item.private(0x2005, 0x0F, "Philips MR Imaging DD 005")
        slope, intercept = precise_rescale(
            philips[0] if philips else None,
            number(item_value(pvt, "RescaleSlope"), top_slope) or 1.0,
            number(item_value(pvt, "RescaleIntercept"), top_intercept),
            manufacturer,
        )
        content = group("FrameContentSequence")
        frame_type_item = (
            group("MRImageFrameTypeSequence") or group("CTImageFrameTypeSequence") or group("FrameTypeSequence")
        )
        frame_type = image_type_values(item_value(frame_type_item, "FrameType"))
        echo = number(item_value(group("MREchoSequence"), "EffectiveEchoTime"), 0.0)
        temporal = (
            number(item_value(content, "TemporalPositionIndex")),
            number(ds.get("AcquisitionNumber")),
            number(ds.get("InstanceNumber")),
            float(f),
        )
        frames.append(Frame(f, ipp, iop, spacing, slope, intercept, temporal, ("/".join(frame_type[2:]), f"{echo:g}")))
    return frames
