"""Slice geometry: order frames in space and time, check the stack, and build the NIfTI affine.

Slices are ordered by their distance along the slice normal (the cross product of the orientation cosines)
applied to ImagePositionPatient, never by InstanceNumber, which scanners number in acquisition order.
Frames that share a position are the volumes of a 4D series, ordered by their temporal key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pipeline.data.reasons import Reason, Rejected
from pipeline.ingest.frames import Frame

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
POSITION_TOLERANCE_MM = 0.01


@dataclass(slots=True)
class Policy:
    """The stack checks' knobs, taken from the ingest config."""

    tilt: str = "reject"
    nonuniform_spacing: str = "reject"
    spacing_tolerance: float = 0.05
    orientation_tolerance: float = 1e-3
    tilt_tolerance_deg: float = 0.1


@dataclass(slots=True)
class Layout:
    """Where each frame goes: ``order[t][z]`` indexes the stack's frame list."""

    order: list[list[int]]
    affine: np.ndarray
    corrections: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return len(self.order[0])

    @property
    def n_volumes(self) -> int:
        return len(self.order)


def unit_normal(iop: tuple[float, ...]) -> np.ndarray:
    normal = np.cross(iop[:3], iop[3:])
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        raise Rejected(Reason.MISSING_GEOMETRY, "degenerate ImageOrientationPatient")
    return normal / norm


def same_orientation(a: tuple[float, ...], b: tuple[float, ...], tol: float) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= tol


def _cluster_positions(distances: np.ndarray) -> list[list[int]]:
    """Group frame indices whose distance along the normal agrees within POSITION_TOLERANCE_MM."""
    order = np.argsort(distances, kind="stable")
    clusters: list[list[int]] = []
    last = -math.inf
    for i in order:
        if distances[i] - last > POSITION_TOLERANCE_MM:
            clusters.append([])
        clusters[-1].append(int(i))
        last = distances[i]
    return clusters


def _spacing_verdict(gaps: np.ndarray, tol: float) -> tuple[str, str]:
    """Classify slice gaps as uniform, missing slices (integer multiples) or non-uniform."""
    med = float(np.median(gaps))
    if np.all(np.abs(gaps - med) <= tol * med):
        return "uniform", ""
    base = float(gaps.min())
    ratios = gaps / base
    if np.all(np.abs(ratios - np.round(ratios)) <= tol) and ratios.max() >= 1.5:
        missing = int(np.round(ratios).sum() - len(gaps))
        return "missing", f"{missing} slice(s) missing: gaps of {base:.3g} mm up to {gaps.max():.3g} mm"
    return "nonuniform", f"slice gaps vary from {gaps.min():.3g} to {gaps.max():.3g} mm"


def plan_layout(frames: list[Frame], policy: Policy, slice_thickness: float = 0.0) -> Layout:
    """Sort frames into a (volumes × slices) grid, run the stack checks, and compute the RAS affine."""
    iop = frames[0].iop
    for f in frames[1:]:
        if not same_orientation(f.iop, iop, policy.orientation_tolerance):
            raise Rejected(Reason.INCONSISTENT_ORIENTATION, "frames of one stack differ in orientation")
    normal = unit_normal(iop)
    ipps = np.array([f.ipp for f in frames], dtype=float)
    distances = ipps @ normal
    clusters = _cluster_positions(distances)
    for cluster in clusters:
        cluster.sort(key=lambda i: frames[i].temporal)
        keys = [frames[i].temporal for i in cluster]
        if len(set(keys)) < len(keys):
            raise Rejected(Reason.DUPLICATE_SLICES, "two frames share one position and one time point")
    counts = {len(c) for c in clusters}
    if len(counts) > 1:
        raise Rejected(
            Reason.MISSING_SLICES, f"{len(clusters)} positions hold between {min(counts)} and {max(counts)} frames each"
        )
    n_vol = counts.pop()
    order = [[cluster[t] for cluster in clusters] for t in range(n_vol)]
    first = order[0]
    corrections: list[str] = []
    if len(first) > 1:
        steps = np.diff(ipps[first], axis=0)
        mean_step = (ipps[first[-1]] - ipps[first[0]]) / (len(first) - 1)
        tilt = math.degrees(math.acos(min(1.0, abs(float(mean_step @ normal)) / float(np.linalg.norm(mean_step)))))
        verdict, detail = _spacing_verdict(np.linalg.norm(steps, axis=1), policy.spacing_tolerance)
        if tilt > policy.tilt_tolerance_deg:
            if policy.tilt == "reject":
                extra = f"; {detail}" if detail else ""
                raise Rejected(Reason.GANTRY_TILT, f"slices sheared by {tilt:.2f} deg{extra}")
            corrections.append("tilt_raw" if policy.tilt == "raw" else "tilt_resampled")
        if verdict != "uniform":
            if policy.nonuniform_spacing == "reject":
                raise Rejected(Reason.MISSING_SLICES if verdict == "missing" else Reason.NONUNIFORM_SPACING, detail)
            corrections.append("spacing_raw" if policy.nonuniform_spacing == "raw" else "spacing_resampled")
        slice_vec = mean_step
        if any(c.endswith("_raw") for c in corrections):
            # dcm2niix's raw stack: the slice axis along the first step, scaled to the first gap measured
            # on the slice normal. Kept for parity with its main output; 'resample' is geometry-true.
            first_step = steps[0]
            slice_vec = first_step / np.linalg.norm(first_step) * abs(float(first_step @ normal))
    else:
        slice_vec = normal * (slice_thickness or 1.0)
    return Layout(order, ras_affine(iop, frames[first[0]].spacing, slice_vec, ipps[first[0]]), corrections)


def ras_affine(
    iop: tuple[float, ...], spacing: tuple[float, float], slice_vec: np.ndarray, origin: np.ndarray
) -> np.ndarray:
    """NIfTI affine (RAS, mm) of a stack: i along a row, j down the columns, k along ``slice_vec``.

    DICOM's PixelSpacing is (between rows, between columns), so the column spacing scales the row cosine.
    """
    affine = np.eye(4)
    affine[:3, 0] = np.array(iop[:3]) * spacing[1]
    affine[:3, 1] = np.array(iop[3:]) * spacing[0]
    affine[:3, 2] = slice_vec
    affine[:3, 3] = origin
    return LPS_TO_RAS @ affine
