"""Optional corrections that resample a stack onto an orthogonal, equally spaced grid.

Both follow what dcm2niix's ``_Tilt`` and ``_Eq`` outputs do (linear interpolation, rounding back to the
stored type, the background filled with the darkest value), but derive the shear from the slice positions
themselves rather than from the GantryDetectorTilt tag, so no vendor sign conventions are needed.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.ingest.geometry import ras_affine, unit_normal
from pipeline.ingest.group import StackPlan


def _slice_positions(plan: StackPlan) -> np.ndarray:
    layout = plan.layout
    return np.array([plan.frames[i].frame.ipp for i in layout.order[0]], dtype=float)


def _round_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the stored type; integers round half away from zero, as C's round() in dcm2niix."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        rounded = np.sign(values) * np.floor(np.abs(values) + 0.5)
        return np.clip(rounded, info.min, info.max).astype(dtype)
    return values.astype(dtype)


def _shift_axis(plane: np.ndarray, axis: int, shift: float, size: int, fill: float) -> np.ndarray:
    """Move ``plane`` by ``shift`` voxels along ``axis`` into ``size`` voxels, interpolating linearly.

    dcm2niix stores rows bottom-up, so its shear runs along the reversed axis: an output voxel whose
    source falls before the first input row gets ``fill``, one past the last repeats the last row. Doing
    the same on the reversed axis makes the two outputs agree to the voxel at the image borders too.
    """
    n = plane.shape[axis]
    flipped = np.flip(plane, axis)
    # A shift a rounding error off a whole voxel is that whole voxel: float32 would drop the error from the
    # source positions but keep it in the weight, and copy the slice one voxel off.
    exact = size - n - shift
    offset = np.float32(round(exact) if abs(exact - round(exact)) < 1e-4 else exact)
    src = np.arange(size, dtype=np.float32) - offset
    inside = (src >= 0) & (src < n)
    lo = np.clip(np.floor(src).astype(np.int64), 0, n - 1)
    hi = np.minimum(lo + 1, n - 1)
    frac = np.float32(np.ceil(offset) - offset)
    a = np.take(flipped, lo, axis=axis).astype(np.float32)
    b = np.take(flipped, hi, axis=axis).astype(np.float32)
    shape = [1] * plane.ndim
    shape[axis] = size
    out = np.where(inside.reshape(shape), a * (np.float32(1) - frac) + b * frac, np.float32(fill))
    return np.flip(out, axis)


def untilt(data: np.ndarray, plan: StackPlan) -> tuple[np.ndarray, np.ndarray]:
    """Shift every slice in-plane so the stack sits on the slice normal; returns (data, LPS origin shift)."""
    iop = plan.frames[plan.layout.order[0][0]].frame.iop
    sp_row, sp_col = plan.frames[plan.layout.order[0][0]].frame.spacing
    ipps = _slice_positions(plan)
    rel = ipps - ipps[0]
    # In-plane offset of each slice, in voxels along i (row direction) and j (column direction).
    offsets = [rel @ np.array(iop[:3]) / sp_col, rel @ np.array(iop[3:]) / sp_row]
    lows = [math.floor(off.min() + 1e-6) for off in offsets]
    sizes = [n + math.ceil(off.max() - 1e-6) - lo for n, off, lo in zip(data.shape[:2], offsets, lows, strict=True)]
    out = np.empty((*sizes, *data.shape[2:]), dtype=data.dtype)
    fill = float(data.min())
    for k in range(data.shape[2]):
        plane = data[:, :, k]
        for axis in (0, 1):
            shift = offsets[axis][k] - lows[axis]
            if abs(shift) > 1e-6 or plane.shape[axis] != sizes[axis]:
                plane = _shift_axis(plane, axis, shift, sizes[axis], fill)
        out[:, :, k] = _round_like(plane, data.dtype)
    origin_shift = np.array(iop[:3]) * sp_col * lows[0] + np.array(iop[3:]) * sp_row * lows[1]
    return out, origin_shift


def equalize(data: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, float]:
    """Linear interpolation along z onto the smallest gap (at most twice the slice count, as dcm2niix)."""
    rel = positions - positions[0]
    gaps = np.diff(rel)
    step = float(gaps[gaps > 0].min())
    n = math.ceil((rel[-1] - 0.5 * gaps[-1]) / step)
    if n > 2 * len(rel):
        n = 2 * len(rel)
        step = float(rel[-1] / (n - 1))
    n = max(n, 2)
    targets = np.arange(n) * step
    hi = np.clip(np.searchsorted(rel, targets), 1, len(rel) - 1)
    lo = hi - 1
    w = np.clip((targets - rel[lo]) / (rel[hi] - rel[lo]), 0.0, 1.0)
    shape = (1, 1, n) + (1,) * (data.ndim - 3)
    w = w.reshape(shape).astype(np.float32)
    mixed = data[:, :, lo].astype(np.float32) * (np.float32(1) - w) + data[:, :, hi].astype(np.float32) * w
    return _round_like(mixed, data.dtype), step


def resample_layout(data: np.ndarray, plan: StackPlan) -> tuple[np.ndarray, np.ndarray]:
    """Apply the corrections the layout asks for; return the new data and its RAS affine."""
    layout = plan.layout
    ref = plan.frames[layout.order[0][0]].frame
    iop = ref.iop
    normal = unit_normal(iop)
    ipps = _slice_positions(plan)
    origin = ipps[0].copy()
    slice_vec = (ipps[-1] - ipps[0]) / max(1, len(ipps) - 1)
    if "tilt_resampled" in layout.corrections:
        data, shift = untilt(data, plan)
        origin = origin + shift
        # Once the shear is removed, slices lie along the normal at their distance along it.
        positions = (ipps - ipps[0]) @ normal
        slice_vec = normal * (positions[-1] / max(1, len(positions) - 1))
    else:
        positions = (ipps - ipps[0]) @ (slice_vec / np.linalg.norm(slice_vec))
    if "spacing_resampled" in layout.corrections:
        direction = slice_vec / np.linalg.norm(slice_vec)
        data, step = equalize(data, positions)
        slice_vec = direction * step
    return data, ras_affine(iop, ref.spacing, slice_vec, origin)
