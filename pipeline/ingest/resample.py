"""Optional corrections that resample a stack onto an orthogonal, equally spaced grid.

Both follow what dcm2niix's ``_Tilt`` and ``_Eq`` outputs do (linear interpolation, rounding back to the
stored type, the background filled with the darkest value), but derive the shear from the slice positions
themselves rather than from the GantryDetectorTilt tag, so no vendor sign conventions are needed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from pipeline.ingest.geometry import LPS_TO_RAS, unit_normal
from pipeline.ingest.group import StackPlan


def _slice_positions(plan: StackPlan) -> np.ndarray:
    layout = plan.layout
    return np.array([plan.frames[i].frame.ipp for i in layout.order[0]], dtype=float)


def _round_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def untilt(data: np.ndarray, plan: StackPlan) -> tuple[np.ndarray, np.ndarray]:
    """Shift every slice in-plane so the stack sits on the slice normal; returns (data, LPS origin shift)."""
    iop = plan.frames[plan.layout.order[0][0]].frame.iop
    sp_row, sp_col = plan.frames[plan.layout.order[0][0]].frame.spacing
    ipps = _slice_positions(plan)
    rel = ipps - ipps[0]
    # In-plane offset of each slice, in voxels along i (row direction) and j (column direction).
    off_i = rel @ np.array(iop[:3]) / sp_col
    off_j = rel @ np.array(iop[3:]) / sp_row
    lo_i, lo_j = math.floor(off_i.min() + 1e-6), math.floor(off_j.min() + 1e-6)
    pad_i = math.ceil(off_i.max() - 1e-6) - lo_i
    pad_j = math.ceil(off_j.max() - 1e-6) - lo_j
    nx, ny = data.shape[:2]
    out = np.empty((nx + pad_i, ny + pad_j, *data.shape[2:]), dtype=data.dtype)
    fill = data.min()
    for k in range(data.shape[2]):
        plane = np.full((nx + pad_i, ny + pad_j, *data.shape[3:]), fill, dtype=np.float64)
        plane[:nx, :ny] = data[:, :, k]
        shift = [off_i[k] - lo_i, off_j[k] - lo_j] + [0] * (data.ndim - 3)
        moved = ndimage.shift(plane, shift, order=1, mode="constant", cval=float(fill), prefilter=False)
        out[:, :, k] = _round_like(moved, data.dtype)
    origin_shift = np.array(iop[:3]) * sp_col * lo_i + np.array(iop[3:]) * sp_row * lo_j
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
    w = w.reshape(shape)
    mixed = data[:, :, lo].astype(np.float64) * (1 - w) + data[:, :, hi].astype(np.float64) * w
    return _round_like(mixed, data.dtype), step


def resample_layout(data: np.ndarray, plan: StackPlan) -> tuple[np.ndarray, np.ndarray]:
    """Apply the corrections the layout asks for; return the new data and its RAS affine."""
    layout = plan.layout
    ref = plan.frames[layout.order[0][0]].frame
    iop, (sp_row, sp_col) = ref.iop, ref.spacing
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
    affine = np.eye(4)
    affine[:3, 0] = np.array(iop[:3]) * sp_col
    affine[:3, 1] = np.array(iop[3:]) * sp_row
    affine[:3, 2] = slice_vec
    affine[:3, 3] = origin
    return data, LPS_TO_RAS @ affine
