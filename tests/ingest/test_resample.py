"""Unit tests for pipeline.ingest.resample.resample_layout: tilted or unevenly spaced stacks onto a regular grid.

The ingest tests compare whole resampled series with dcm2niix's; here the geometry is checked on its own, on
small in-memory stacks sampled from a field that is linear in patient space (LPS mm). Linear interpolation
reproduces such a field exactly, so every output voxel whose source lies inside the input must hold the field's
value at the position the output affine gives it: a wrong shear direction, origin shift, slice step or swapped
pixel spacing fails by whole millimetres, not by a rounding. The grid itself is checked too: slices orthogonal to
the plane after untilting, equally spaced at the smallest gap (as dcm2niix, fence post and 2x cap included).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.ingest.frames import Frame
from pipeline.ingest.geometry import LPS_TO_RAS, Policy, plan_layout, ras_affine
from pipeline.ingest.group import FrameRef, StackPlan
from pipeline.ingest.resample import resample_layout

C30, S30 = math.cos(math.radians(30)), math.sin(math.radians(30))
C20, S20 = math.cos(math.radians(20)), math.sin(math.radians(20))
# An oblique orientation: rotated 30 deg in-plane, then 20 deg out of the axial plane (orthonormal cosines).
ROW = np.array([C30, S30, 0.0])
COL = np.array([-S30 * C20, C30 * C20, S20])
NORMAL = np.cross(ROW, COL)
IOP = (*ROW, *COL)
SPACING = (0.5, 0.8)  # (between rows, between columns): i steps 0.8 mm along ROW, j 0.5 mm along COL
ORIGIN = np.array([-40.0, 25.0, 60.0])


def field(p: np.ndarray) -> np.ndarray:
    """A linear function of LPS position (mm): what every voxel holds, in the input and (ideally) the output."""
    return 3.0 + 0.5 * p[..., 0] - 0.25 * p[..., 1] + 2.0 * p[..., 2]


def make_plan(ipps: list[np.ndarray], policy: Policy, temporal: list[float] | None = None) -> StackPlan:
    """A stack plan over frames at ``ipps`` (in that order), laid out by plan_layout with ``policy``."""
    times = temporal or [0.0] * len(ipps)
    frames = [
        Frame(n, tuple(float(v) for v in p), IOP, SPACING, 1.0, 0.0, (t, 0.0, float(n)))  # type: ignore[arg-type]
        for n, (p, t) in enumerate(zip(ipps, times, strict=True))
    ]
    layout = plan_layout(frames, policy)
    return StackPlan("key", "", [], [FrameRef(0, f) for f in frames], layout)


def in_plane(ipp: np.ndarray, n0: int, n1: int) -> np.ndarray:
    """LPS position of every voxel (i, j) of the slice at ``ipp``: shape (n0, n1, 3)."""
    i, j = np.meshgrid(np.arange(n0), np.arange(n1), indexing="ij")
    return ipp + i[..., None] * SPACING[1] * ROW + j[..., None] * SPACING[0] * COL


def sample(plan: StackPlan, n0: int, n1: int, dtype: type = np.float32) -> np.ndarray:
    """The stack's voxels in layout order, data[i, j, k(, t)], from ``field`` (+100 per volume)."""
    assert plan.layout is not None
    data = np.empty((n0, n1, plan.layout.n_slices, plan.layout.n_volumes))
    for t, volume in enumerate(plan.layout.order):
        for k, index in enumerate(volume):
            data[:, :, k, t] = field(in_plane(np.array(plan.frames[index].frame.ipp), n0, n1)) + 100.0 * t
    data = data[..., 0] if plan.layout.n_volumes == 1 else data
    return data.astype(dtype)


def voxel_positions(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """LPS position (mm) of every output voxel under a RAS affine: shape (*shape[:3], 3)."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape[:3]), indexing="ij"), axis=-1)
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    return ras * np.array([-1.0, -1.0, 1.0])


def source_coords(positions: np.ndarray, ipp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where ``positions`` fall in the input slice at ``ipp``, in voxels along i and j."""
    rel = positions - ipp
    return rel @ ROW / SPACING[1], rel @ COL / SPACING[0]


def inside(s: np.ndarray, n: int, eps: float = 1e-4) -> np.ndarray:
    return (s >= -eps) & (s <= n - 1 + eps)


def slice_ipps(plan: StackPlan) -> list[np.ndarray]:
    assert plan.layout is not None
    return [np.array(plan.frames[i].frame.ipp) for i in plan.layout.order[0]]


def sheared(distances: list[float], di: float, dj: float, per_mm: float) -> list[np.ndarray]:
    """Positions at ``distances`` along the normal, shifted in-plane by (di, dj) voxels per ``per_mm`` of it."""
    return [ORIGIN + d * NORMAL + d / per_mm * (di * SPACING[1] * ROW + dj * SPACING[0] * COL) for d in distances]


# --- no correction -------------------------------------------------------------------------------------------


def test_a_regular_stack_is_left_as_it_is() -> None:
    plan = make_plan([ORIGIN + d * NORMAL for d in (4.0, 0.0, 2.0)], Policy())
    assert plan.layout is not None and plan.layout.corrections == []
    data = sample(plan, 3, 4)
    out, affine = resample_layout(data, plan)
    np.testing.assert_array_equal(out, data)
    np.testing.assert_allclose(affine, plan.layout.affine, atol=1e-12)


# --- equal spacing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("distances", "step", "n_out"),
    [
        # n = ceil((extent - half the last gap) / smallest gap), as dcm2niix: the slice at 10 mm is not reached.
        ([0.0, 2.0, 4.0, 8.0, 10.0], 2.0, 5),
        ([0.0, 2.0, 5.0, 8.0], 2.0, 4),
        ([0.0, 3.0, 4.0, 7.0, 10.0], 1.0, 9),
        # 30 slices at 0.5 mm would be more than twice the input's 4: capped at 8, spread over the whole extent.
        ([0.0, 0.5, 10.0, 20.0], 20.0 / 7.0, 8),
    ],
)
def test_uneven_slices_resampled_onto_the_smallest_gap(distances: list[float], step: float, n_out: int) -> None:
    shuffled = distances[1::2] + distances[0::2]
    plan = make_plan([ORIGIN + d * NORMAL for d in shuffled], Policy(nonuniform_spacing="resample"))
    assert plan.layout is not None and plan.layout.corrections == ["spacing_resampled"]
    out, affine = resample_layout(sample(plan, 3, 4), plan)
    assert out.shape == (3, 4, n_out)
    assert out.dtype == np.float32
    expected = ras_affine(IOP, SPACING, NORMAL * step, ORIGIN)
    np.testing.assert_allclose(affine, expected, atol=1e-9)
    assert (n_out - 1) * step <= distances[-1] + 1e-9  # every output slice lies within the input's extent
    np.testing.assert_allclose(out, field(voxel_positions(affine, out.shape)), atol=2e-3)


def test_equal_spacing_keeps_each_volume_of_a_4d_stack() -> None:
    distances = [0.0, 2.0, 4.0, 8.0, 10.0]
    ipps = [ORIGIN + d * NORMAL for d in distances for _ in range(2)]
    plan = make_plan(ipps, Policy(nonuniform_spacing="resample"), temporal=[0.0, 1.0] * len(distances))
    assert plan.layout is not None and plan.layout.n_volumes == 2
    out, affine = resample_layout(sample(plan, 3, 4), plan)
    assert out.shape == (3, 4, 5, 2)
    positions = voxel_positions(affine, out.shape)
    for t in range(2):
        np.testing.assert_allclose(out[..., t], field(positions) + 100.0 * t, atol=2e-3)


def test_integer_stacks_round_half_away_from_zero() -> None:
    """Slices at 0, 2, 4, 5 mm onto a 1 mm grid: the 1 and 3 mm slices fall half-way, at 4.5 and -4.5."""
    plan = make_plan([ORIGIN + d * NORMAL for d in (0.0, 2.0, 4.0, 5.0)], Policy(nonuniform_spacing="resample"))
    data = np.empty((2, 2, 4), dtype=np.int16)
    data[:] = np.array([9, 0, -9, 7], dtype=np.int16)
    out, _ = resample_layout(data, plan)
    assert out.dtype == np.int16
    assert out.shape == (2, 2, 5)
    np.testing.assert_array_equal(out[0, 0], [9, 5, 0, -5, -9])
    assert np.all(out == out[:1, :1])


# --- tilt ----------------------------------------------------------------------------------------------------
# Shears are kept off whole voxels here: a whole-voxel shift computed from float positions lands a hair above or
# below the integer depending on rounding, and the two sides behave differently (see the whole-voxel tests below).


@pytest.mark.parametrize(
    ("di", "dj", "shape"),
    [
        (0.4, 0.0, (7, 6, 4)),
        (-0.6, 0.0, (7, 6, 4)),
        (0.0, 1.3, (5, 10, 4)),
        (0.0, -1.3, (5, 10, 4)),
        (0.3, -0.7, (6, 9, 4)),
    ],
)
def test_untilt_puts_every_slice_on_the_normal(di: float, dj: float, shape: tuple[int, ...]) -> None:
    """Each slice shifted in-plane by (di, dj) voxels more than the last, 2 mm apart along the normal."""
    ipps = sheared([0.0, 2.0, 4.0, 6.0], di, dj, per_mm=2.0)
    plan = make_plan([ipps[k] for k in (2, 0, 3, 1)], Policy(tilt="resample"))
    assert plan.layout is not None and plan.layout.corrections == ["tilt_resampled"]
    data = sample(plan, 5, 6)
    out, affine = resample_layout(data, plan)
    assert out.shape == shape
    assert out.dtype == data.dtype

    # A regular grid on the normal: in-plane axes as the input's, the slice axis along the normal, 2 mm a step.
    np.testing.assert_allclose(affine[:3, :2], ras_affine(IOP, SPACING, NORMAL, ORIGIN)[:3, :2], atol=1e-12)
    np.testing.assert_allclose(affine[:3, 2], (LPS_TO_RAS[:3, :3] @ NORMAL) * 2.0, atol=1e-9)
    positions = voxel_positions(affine, out.shape)
    for k, ipp in enumerate(ipps):
        np.testing.assert_allclose((positions[:, :, k] - ipp) @ NORMAL, 0.0, atol=1e-9)  # on input plane k
        s0, s1 = source_coords(positions[:, :, k], ipp)
        exact = inside(s0, 5) & inside(s1, 6)
        assert exact.sum() >= 4 * 5  # at least n - 1 output voxels per axis fall within the input's span
        np.testing.assert_allclose(out[:, :, k][exact], field(positions[:, :, k][exact]), atol=2e-3)
        # Past a whole voxel beyond the input: the background, the darkest value of the stack.
        outside = (s0 < -1 - 1e-4) | (s0 > 4 + 1e-4) | (s1 < -1 - 1e-4) | (s1 > 5 + 1e-4)
        np.testing.assert_allclose(out[:, :, k][outside], data.min(), atol=1e-3)


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize(
    "nudge",
    [
        pytest.param(1e-9, id="above"),
        pytest.param(-1e-9, id="below"),
    ],
)
def test_untilt_copies_whole_voxel_shifts_exactly(axis: int, nudge: float) -> None:
    """One voxel more per slice (give or take 1e-9 voxel): every slice copied intact, the rest background."""
    di, dj = (1.0 + nudge, 0.0) if axis == 0 else (0.0, 1.0 + nudge)
    plan = make_plan(sheared([0.0, 2.0, 4.0], di, dj, per_mm=2.0), Policy(tilt="resample"))
    data = np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3) - 20
    out, _ = resample_layout(data, plan)
    assert out.dtype == np.int16
    assert out.shape == ((6, 5, 3) if axis == 0 else (4, 7, 3))
    n = data.shape[axis]
    for k in range(3):
        placed = np.take(out[:, :, k], range(k, k + n), axis=axis)
        # All but the last row: their sources sit on whole voxels (give or take 2e-9), so they copy exactly.
        head = range(n - 1)
        np.testing.assert_array_equal(np.take(placed, head, axis=axis), np.take(data[:, :, k], head, axis=axis))
        if nudge > 0:  # 2e-9 voxel inside the input, the last row too (below, 2e-9 outside: background or not)
            np.testing.assert_array_equal(placed, data[:, :, k])
        assert np.all(np.delete(out[:, :, k], np.s_[k : k + n], axis=axis) == data.min())


def test_tilt_and_spacing_resampled_together() -> None:
    """A sheared stack missing a slice: untilted, then equally spaced along the normal."""
    distances = [0.0, 2.0, 4.0, 8.0, 10.0]
    ipps = sheared(distances, 0.0, 0.7, per_mm=2.0)  # in-plane offsets 0, 0.7, 1.4, 2.8 and 3.5 voxels
    plan = make_plan(ipps[::-1], Policy(tilt="resample", nonuniform_spacing="resample"))
    assert plan.layout is not None and plan.layout.corrections == ["tilt_resampled", "spacing_resampled"]
    out, affine = resample_layout(sample(plan, 4, 8), plan)
    assert out.shape == (4, 8 + 4, 5)
    np.testing.assert_allclose(affine[:3, :2], ras_affine(IOP, SPACING, NORMAL, ORIGIN)[:3, :2], atol=1e-12)
    np.testing.assert_allclose(affine[:3, 2], (LPS_TO_RAS[:3, :3] @ NORMAL) * 2.0, atol=1e-9)
    positions = voxel_positions(affine, out.shape)
    for k in range(out.shape[2]):
        np.testing.assert_allclose((positions[:, :, k] - ORIGIN) @ NORMAL, 2.0 * k, atol=1e-9)
    # Where every input slice covers the voxel, the blend of two of them is the field itself.
    covered = np.ones(out.shape, dtype=bool)
    for ipp in ipps:
        s0, s1 = source_coords(positions, ipp)
        covered &= inside(s0, 4) & inside(s1, 8)
    assert covered.sum() == 4 * 4 * 5  # j from 4 to 7 lies within every input slice's span
    np.testing.assert_allclose(out[covered], field(positions[covered]), atol=2e-3)
