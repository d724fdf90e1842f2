"""Conversion tasks that run on Dask workers: decode, assemble, write, and return one small manifest row.

Pixel arrays never leave the worker: a task gets a plan (paths and geometry) and returns a dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pipeline.data.images import read_image, volume_layout
from pipeline.data.reasons import Reason, Rejected, describe
from pipeline.ingest.group import StackPlan
from pipeline.ingest.headers import ImageFileHeader
from pipeline.ingest.manifest_rows import image_row, stack_row
from pipeline.ingest.nifti import pack_colour, write_nifti
from pipeline.ingest.pixels import read_planes
from pipeline.ingest.resample import resample_layout


def nifti_name(key: str, compress: bool) -> str:
    return f"{key}.nii.gz" if compress else f"{key}.nii"


def assemble(plan: StackPlan) -> tuple[np.ndarray, float, float]:
    """Decode the plan's files and place every frame: returns (data in x,y,z[,t][,c] order, slope, intercept)."""
    layout = plan.layout
    planes: dict[int, np.ndarray] = {}
    needed = {plan.frames[i].file for vol in layout.order for i in vol}
    for f in sorted(needed):
        planes[f] = read_planes(plan.files[f])
    scales = {(plan.frames[i].frame.slope, plan.frames[i].frame.intercept) for vol in layout.order for i in vol}
    sample = planes[next(iter(planes))]
    varying = len(scales) > 1
    dtype = np.float32 if varying else sample.dtype
    nz, nt = layout.n_slices, layout.n_volumes
    out = np.empty((nt, nz, *sample.shape[1:]), dtype=dtype)
    for t, vol in enumerate(layout.order):
        for z, i in enumerate(vol):
            ref = plan.frames[i]
            try:
                plane = planes[ref.file][ref.frame.index]
            except IndexError as exc:
                raise Rejected(Reason.CORRUPT_FILE, "fewer frames decoded than the header declares") from exc
            if plane.shape != sample.shape[1:]:
                raise Rejected(Reason.INCONSISTENT_SHAPE, "decoded planes differ in size")
            out[t, z] = plane * ref.frame.slope + ref.frame.intercept if varying else plane
    slope, intercept = (1.0, 0.0) if varying else scales.pop()
    # (t, z, rows, cols[, c]) -> (cols, rows, z, t[, c]): NIfTI's i runs along a row, j down the columns.
    # A view, not a copy: ``out`` in C order is NIfTI's on-disk (Fortran) order of ``data``, so nibabel writes
    # it without transposing; a C-order copy here cost two transposes of every volume (this one, then
    # nibabel's back to Fortran order), where the voxel digest now makes the only one.
    data = np.moveaxis(out, (0, 1, 2, 3), (3, 2, 1, 0))
    if nt == 1:
        data = data[:, :, :, 0]
    return data, slope, intercept


def _write(
    out_dir: str,
    key: str,
    compress: bool,
    data: np.ndarray,
    affine: np.ndarray,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> dict[str, Any]:
    """Write one volume and return the manifest fields that describe it."""
    rel = Path("volumes") / nifti_name(key, compress)
    digest = write_nifti(Path(out_dir) / rel, data, affine, slope, intercept)
    return {
        "output_path": str(rel),
        "voxel_sha256": digest,
        "shape": list(data.shape),
        "spacing": [float(s) for s in nib.affines.voxel_sizes(affine)],
        "dtype": "RGB24" if data.dtype.names else str(data.dtype),
    }


def convert_stack(plan: StackPlan, out_dir: str, compress: bool, site: str | None, digest: str) -> list[dict[str, Any]]:
    """Convert one accepted stack to NIfTI; a failure rejects this stack only, never the batch."""
    row = stack_row(plan, site, digest)
    try:
        data, slope, intercept = assemble(plan)
        affine = plan.layout.affine
        if any(c.endswith("_resampled") for c in plan.layout.corrections):
            data, affine = resample_layout(data, plan)
        if plan.head.samples == 3 or plan.head.photometric == "PALETTE COLOR":
            data = pack_colour(data)
        row.update(_write(out_dir, plan.key, compress, data, affine, slope, intercept))
    except Rejected as rej:
        row.update(status="rejected", reason=str(rej.reason), detail=rej.detail)
    except Exception as exc:  # a decoder, a full disk, a file gone since the scan: this stack only
        row.update(status="rejected", reason=str(Reason.DECODE_FAILED), detail=describe(exc, plan.head.path))
    return [row]


def convert_images(
    items: list[tuple[ImageFileHeader, dict[str, Any]]], out_dir: str, compress: bool
) -> list[dict[str, Any]]:
    """Convert a batch of PNG/JPEG files (one Dask task for many small images)."""
    return [_convert_image(h, extra, out_dir, compress) for h, extra in items]


def _convert_image(h: ImageFileHeader, extra: dict[str, Any], out_dir: str, compress: bool) -> dict[str, Any]:
    row = image_row(h, extra)
    try:
        data = volume_layout(read_image(h.path))
    except Exception as exc:
        row.update(status="rejected", reason=str(Reason.CORRUPT_FILE), detail=describe(exc, h.path))
        return row
    if data.ndim == 4:
        data = pack_colour(data)
    try:
        row.update(_write(out_dir, row["series_key"], compress, data, np.diag([-1.0, -1.0, 1.0, 1.0])))
    except Exception as exc:  # e.g. a full disk: this image only
        row.update(status="rejected", reason=str(Reason.DECODE_FAILED), detail=describe(exc, h.path))
    return row
