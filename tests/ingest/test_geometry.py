"""Unit tests for pipeline.ingest.geometry: slice order, stack checks and the NIfTI affine, on in-memory frames.

The ingest tests reach this module only through whole DICOM series, where a wrong sign or a swapped spacing
shows up as a voxel mismatch far from its cause. Here each rule is pinned on a few synthetic frames: order along
the slice normal (never by instance number), the LPS->RAS affine against hand-computed matrices, 4D grouping,
the spacing verdicts (uniform, missing slices, non-uniform), gantry tilt, duplicates, orientation, and what each
Policy knob (reject / raw / resample, the tolerances) changes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.data.reasons import Reason, Rejected
from pipeline.ingest.frames import Frame
from pipeline.ingest.geometry import (
    LPS_TO_RAS,
    Layout,
    Policy,
    plan_layout,
    ras_affine,
    same_orientation,
    unit_normal,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SPACING = (0.5, 0.8)  # (between rows, between columns): the column spacing scales the row cosine
C20, S20 = math.cos(math.radians(20)), math.sin(math.radians(20))
OBLIQUE = (1.0, 0.0, 0.0, 0.0, C20, S20)  # axial rotated 20 deg about x; its normal is (0, -sin, cos)
TAN15 = math.tan(math.radians(15))


def frame(
    ipp: tuple[float, float, float] | np.ndarray,
    iop: tuple[float, ...] = AXIAL,
    temporal: tuple[float, ...] = (0.0,),
    spacing: tuple[float, float] = SPACING,
) -> Frame:
    return Frame(0, tuple(float(v) for v in ipp), iop, spacing, 1.0, 0.0, temporal)  # type: ignore[arg-type]


def axial(zs: list[float], shear_y_per_mm: float = 0.0) -> list[Frame]:
    """Axial frames at the given z (mm), in the given (unsorted) order; optionally sheared along y with z."""
    return [frame((-100.0, -120.0 + z * shear_y_per_mm, z), temporal=(0.0, 0.0, float(n))) for n, z in enumerate(zs)]


def sorted_z(frames: list[Frame], layout: Layout) -> list[float]:
    return [frames[i].ipp[2] for i in layout.order[0]]


# --- unit_normal, same_orientation, ras_affine ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("iop", "expected"),
    [
        (AXIAL, (0.0, 0.0, 1.0)),
        (SAGITTAL, (-1.0, 0.0, 0.0)),
        (CORONAL, (0.0, 1.0, 0.0)),
        ((2.0, 0.0, 0.0, 0.0, 3.0, 0.0), (0.0, 0.0, 1.0)),  # cosines not of unit length: normalised
        (OBLIQUE, (0.0, -S20, C20)),
    ],
)
def test_unit_normal_is_the_normalised_cross_product(iop: tuple[float, ...], expected: tuple[float, ...]) -> None:
    np.testing.assert_allclose(unit_normal(iop), expected, atol=1e-12)


@pytest.mark.parametrize("iop", [(1.0, 0.0, 0.0, 1.0, 0.0, 0.0), (0.0,) * 6, (1.0, 0.0, 0.0, -1.0, 0.0, 0.0)])
def test_unit_normal_rejects_degenerate_orientation(iop: tuple[float, ...]) -> None:
    with pytest.raises(Rejected) as err:
        unit_normal(iop)
    assert err.value.reason is Reason.MISSING_GEOMETRY


@pytest.mark.parametrize(
    ("b", "tol", "same"),
    [
        (AXIAL, 0.0, True),
        ((1.0, 0.0, 0.0, 0.0, 1.0, 5e-4), 1e-3, True),
        ((1.0, 0.0, 0.0, 0.0, 1.0, 2e-3), 1e-3, False),
        ((1.0, 2e-3, 0.0, 0.0, 1.0, 0.0), 1e-2, True),
        ((0.9999, 0.0, 0.0, 0.0, 1.0, 0.0), 1e-5, False),
    ],
)
def test_same_orientation_compares_every_cosine_to_the_tolerance(b: tuple[float, ...], tol: float, same: bool) -> None:
    assert same_orientation(AXIAL, b, tol) is same
    assert same_orientation(b, AXIAL, tol) is same


def test_ras_affine_axial_by_hand() -> None:
    affine = ras_affine(AXIAL, SPACING, np.array([0.0, 0.0, 2.0]), np.array([10.0, 20.0, 30.0]))
    expected = np.array(
        [
            [-0.8, 0.0, 0.0, -10.0],
            [0.0, -0.5, 0.0, -20.0],
            [0.0, 0.0, 2.0, 30.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(affine, expected, atol=1e-12)


def test_ras_affine_sagittal_by_hand() -> None:
    affine = ras_affine(SAGITTAL, SPACING, np.array([-2.0, 0.0, 0.0]), np.array([1.0, 2.0, 3.0]))
    expected = np.array(
        [
            [0.0, 0.0, 2.0, -1.0],
            [-0.8, 0.0, 0.0, -2.0],
            [0.0, -0.5, 0.0, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(affine, expected, atol=1e-12)


def test_ras_affine_in_plane_rotation_by_hand() -> None:
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    iop = (c, s, 0.0, -s, c, 0.0)
    affine = ras_affine(iop, SPACING, np.array([0.0, 0.0, 3.0]), np.array([10.0, -20.0, 5.0]))
    expected = np.array(
        [
            [-0.8 * c, 0.5 * s, 0.0, -10.0],
            [-0.8 * s, -0.5 * c, 0.0, 20.0],
            [0.0, 0.0, 3.0, 5.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(affine, expected, atol=1e-12)


# --- plan_layout: order and affine -------------------------------------------------------------------------


def test_policy_defaults_reject_everything() -> None:
    policy = Policy()
    assert (policy.tilt, policy.nonuniform_spacing) == ("reject", "reject")
    assert (policy.spacing_tolerance, policy.orientation_tolerance, policy.tilt_tolerance_deg) == (0.05, 1e-3, 0.1)


def test_shuffled_axial_slices_sorted_by_position() -> None:
    frames = axial([4.0, 0.0, 8.0, 2.0, 6.0])
    layout = plan_layout(frames, Policy())
    assert layout.order == [[1, 3, 0, 4, 2]]
    assert (layout.n_slices, layout.n_volumes) == (5, 1)
    assert layout.corrections == []
    expected = np.array(
        [
            [-0.8, 0.0, 0.0, 100.0],
            [0.0, -0.5, 0.0, 120.0],
            [0.0, 0.0, 2.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(layout.affine, expected, atol=1e-12)


def test_order_follows_the_normal_not_the_instance_number() -> None:
    """Sagittal: the normal is -x (LPS), so the slice with the largest x comes first, whatever its number."""
    xs = [6.0, 0.0, 4.0, 2.0]
    # Instance numbers increase with x: sorting by them would give the reverse order.
    frames = [frame((x, 10.0, 20.0), SAGITTAL, temporal=(0.0, 0.0, x)) for x in xs]
    layout = plan_layout(frames, Policy())
    assert layout.order == [[0, 2, 3, 1]]
    expected = np.array(
        [
            [0.0, 0.0, 2.0, -6.0],
            [-0.8, 0.0, 0.0, -10.0],
            [0.0, -0.5, 0.0, 20.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(layout.affine, expected, atol=1e-12)


def test_oblique_affine_maps_each_slice_index_to_its_position() -> None:
    normal = np.array([0.0, -S20, C20])
    origin = np.array([3.0, -7.0, 11.0])
    shuffle = [3, 0, 5, 1, 4, 2]
    frames = [frame(origin + k * 1.5 * normal, OBLIQUE) for k in shuffle]
    layout = plan_layout(frames, Policy())
    assert [shuffle[i] for i in layout.order[0]] == [0, 1, 2, 3, 4, 5]
    for k, i in enumerate(layout.order[0]):
        np.testing.assert_allclose(layout.affine @ [0, 0, k, 1], LPS_TO_RAS @ [*frames[i].ipp, 1.0], atol=1e-9)
    # The in-plane axes: i along the row cosine by the column spacing, j along the column cosine by the row spacing.
    np.testing.assert_allclose(layout.affine[:3, 0], [-0.8, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(layout.affine[:3, 1], [0.0, -0.5 * C20, 0.5 * S20], atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(layout.affine[:3, :3], axis=0), [0.8, 0.5, 1.5], atol=1e-12)


@pytest.mark.parametrize(
    ("iop", "thickness", "slice_column"),
    [
        (AXIAL, 3.0, (0.0, 0.0, 3.0)),
        (AXIAL, 0.0, (0.0, 0.0, 1.0)),  # no SliceThickness: 1 mm
        (SAGITTAL, 2.5, (2.5, 0.0, 0.0)),  # normal -x in LPS is +x in RAS
        (CORONAL, 4.0, (0.0, -4.0, 0.0)),
    ],
)
def test_single_slice_uses_thickness_along_the_normal(
    iop: tuple[float, ...], thickness: float, slice_column: tuple[float, ...]
) -> None:
    layout = plan_layout([frame((1.0, 2.0, 3.0), iop)], Policy(), slice_thickness=thickness)
    assert layout.order == [[0]]
    assert layout.corrections == []
    np.testing.assert_allclose(layout.affine[:3, 2], slice_column, atol=1e-12)
    np.testing.assert_allclose(layout.affine[:3, 3], [-1.0, -2.0, 3.0], atol=1e-12)


def test_frames_sharing_a_position_are_volumes_ordered_by_time() -> None:
    # (z, time point), shuffled; the temporal key decides the volume, the position the slice.
    spec = [(4.0, 1.0), (0.0, 0.0), (2.0, 1.0), (4.0, 0.0), (0.0, 1.0), (2.0, 0.0)]
    frames = [frame((0.0, 0.0, z), temporal=(t, 0.0, 0.0)) for z, t in spec]
    layout = plan_layout(frames, Policy())
    assert (layout.n_volumes, layout.n_slices) == (2, 3)
    assert layout.order == [[1, 5, 3], [4, 2, 0]]
    for t, volume in enumerate(layout.order):
        assert [spec[i] for i in volume] == [(0.0, t), (2.0, t), (4.0, t)]
    np.testing.assert_allclose(layout.affine[:3, 2], [0.0, 0.0, 2.0], atol=1e-12)


def test_positions_within_a_hundredth_of_a_mm_are_one_slice() -> None:
    frames = [frame((0.0, 0.0, z + 0.005 * t), temporal=(float(t),)) for t in range(2) for z in (0.0, 2.0, 4.0)]
    layout = plan_layout(frames, Policy())
    assert (layout.n_volumes, layout.n_slices) == (2, 3)
    assert layout.order == [[0, 1, 2], [3, 4, 5]]


# --- plan_layout: rejections ---------------------------------------------------------------------------------


def test_two_frames_at_one_position_and_time_are_duplicates() -> None:
    frames = [frame((0.0, 0.0, z), temporal=(0.0, 0.0, 1.0)) for z in (0.0, 2.0, 2.0, 4.0)]
    with pytest.raises(Rejected) as err:
        plan_layout(frames, Policy())
    assert err.value.reason is Reason.DUPLICATE_SLICES


def test_positions_with_unequal_frame_counts_are_missing_slices() -> None:
    frames = [frame((0.0, 0.0, z), temporal=(float(t),)) for t, z in enumerate((0.0, 2.0, 2.0, 4.0))]
    with pytest.raises(Rejected) as err:
        plan_layout(frames, Policy())
    assert err.value.reason is Reason.MISSING_SLICES
    assert err.value.detail == "3 positions hold between 1 and 2 frames each"


@pytest.mark.parametrize(
    ("delta", "tolerance", "accepted"),
    [
        (1e-4, 1e-3, True),
        (1e-2, 1e-3, False),
        (1e-2, 2e-2, True),
    ],
)
def test_orientation_must_agree_within_the_policy_tolerance(delta: float, tolerance: float, accepted: bool) -> None:
    frames = axial([0.0, 2.0, 4.0])
    frames[1].iop = (1.0, 0.0, 0.0, 0.0, 1.0 - delta, delta)
    policy = Policy(orientation_tolerance=tolerance)
    if accepted:
        assert plan_layout(frames, policy).order == [[0, 1, 2]]
    else:
        with pytest.raises(Rejected) as err:
            plan_layout(frames, policy)
        assert err.value.reason is Reason.INCONSISTENT_ORIENTATION


def test_degenerate_orientation_is_missing_geometry() -> None:
    frames = [frame((0.0, 0.0, z), (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)) for z in (0.0, 2.0)]
    with pytest.raises(Rejected) as err:
        plan_layout(frames, Policy())
    assert err.value.reason is Reason.MISSING_GEOMETRY


@pytest.mark.parametrize(
    ("zs", "reason", "detail"),
    [
        ([0.0, 2.0, 4.0, 6.0, 8.0], None, ""),
        ([0.0, 2.0, 4.08, 6.08], None, ""),  # one gap 4% long: within the 5% tolerance
        ([0.0, 2.0, 4.0, 8.0, 10.0], Reason.MISSING_SLICES, "1 slice(s) missing"),
        ([0.0, 2.0, 8.0, 10.0], Reason.MISSING_SLICES, "2 slice(s) missing"),
        ([0.0, 2.0, 5.0, 7.0], Reason.NONUNIFORM_SPACING, "slice gaps vary from 2 to 3 mm"),
        ([0.0, 2.0, 4.0, 6.3], Reason.NONUNIFORM_SPACING, "slice gaps vary from 2 to 2.3 mm"),
    ],
)
def test_spacing_verdicts(zs: list[float], reason: Reason | None, detail: str) -> None:
    frames = axial(zs[::-1])  # reversed, so that the verdict cannot lean on the input order
    if reason is None:
        layout = plan_layout(frames, Policy())
        assert sorted_z(frames, layout) == zs
        assert layout.corrections == []
    else:
        with pytest.raises(Rejected) as err:
            plan_layout(frames, Policy())
        assert err.value.reason is reason
        assert err.value.detail.startswith(detail)


@pytest.mark.parametrize(("tolerance", "accepted"), [(0.05, False), (0.1, True)])
def test_spacing_tolerance_is_relative_to_the_median_gap(tolerance: float, accepted: bool) -> None:
    frames = axial([0.0, 2.0, 4.15, 6.15])  # one gap 7.5% longer than the others
    policy = Policy(spacing_tolerance=tolerance)
    if accepted:
        assert plan_layout(frames, policy).corrections == []
    else:
        with pytest.raises(Rejected) as err:
            plan_layout(frames, policy)
        assert err.value.reason is Reason.NONUNIFORM_SPACING


@pytest.mark.parametrize(
    ("zs", "policy", "correction", "slice_column"),
    [
        # raw: dcm2niix's stack, the slice axis along the first gap; resample: the mean step, to be resampled.
        ([0.0, 2.0, 4.0, 8.0, 10.0], "raw", "spacing_raw", 2.0),
        ([0.0, 2.0, 4.0, 8.0, 10.0], "resample", "spacing_resampled", 2.5),
        ([0.0, 3.0, 5.0, 7.0], "raw", "spacing_raw", 3.0),
        ([0.0, 3.0, 5.0, 7.0], "resample", "spacing_resampled", 7.0 / 3.0),
    ],
)
def test_nonuniform_spacing_policy(zs: list[float], policy: str, correction: str, slice_column: float) -> None:
    frames = axial(zs[::-1])
    layout = plan_layout(frames, Policy(nonuniform_spacing=policy))
    assert layout.corrections == [correction]
    assert sorted_z(frames, layout) == zs
    np.testing.assert_allclose(layout.affine[:3, 2], [0.0, 0.0, slice_column], atol=1e-12)
    np.testing.assert_allclose(layout.affine[:3, 3], [100.0, 120.0, 0.0], atol=1e-12)


# --- plan_layout: gantry tilt --------------------------------------------------------------------------------


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_tilted_stack_is_rejected_with_its_angle(sign: float) -> None:
    with pytest.raises(Rejected) as err:
        plan_layout(axial([0.0, 2.0, 4.0, 6.0], sign * TAN15), Policy())
    assert err.value.reason is Reason.GANTRY_TILT
    assert err.value.detail == "slices sheared by 15.00 deg"


@pytest.mark.parametrize(
    ("policy", "correction", "slice_column"),
    [
        # raw: along the first step, scaled to its distance along the normal (2 mm): 2 (0, sin, cos) in LPS.
        ("raw", "tilt_raw", (0.0, -2.0 * math.sin(math.radians(15)), 2.0 * math.cos(math.radians(15)))),
        # resample: the sheared mean step itself, (0, 2 tan, 2) in LPS.
        ("resample", "tilt_resampled", (0.0, -2.0 * TAN15, 2.0)),
    ],
)
def test_tilt_policy(policy: str, correction: str, slice_column: tuple[float, ...]) -> None:
    frames = axial([6.0, 0.0, 4.0, 2.0], TAN15)
    layout = plan_layout(frames, Policy(tilt=policy))
    assert layout.corrections == [correction]
    assert sorted_z(frames, layout) == [0.0, 2.0, 4.0, 6.0]
    np.testing.assert_allclose(layout.affine[:3, 2], slice_column, atol=1e-12)
    np.testing.assert_allclose(layout.affine[:3, 3], [100.0, 120.0, 0.0], atol=1e-12)


@pytest.mark.parametrize(
    ("degrees", "tolerance", "rejected"),
    [
        (0.05, 0.1, False),
        (0.05, 0.01, True),
        (0.5, 0.1, True),
        (0.5, 1.0, False),
    ],
)
def test_tilt_tolerance(degrees: float, tolerance: float, rejected: bool) -> None:
    frames = axial([0.0, 2.0, 4.0], math.tan(math.radians(degrees)))
    policy = Policy(tilt_tolerance_deg=tolerance)
    if rejected:
        with pytest.raises(Rejected) as err:
            plan_layout(frames, policy)
        assert err.value.reason is Reason.GANTRY_TILT
    else:
        layout = plan_layout(frames, policy)
        assert layout.corrections == []
        np.testing.assert_allclose(layout.affine[:3, 2], [0.0, -2.0 * math.tan(math.radians(degrees)), 2.0])


def test_tilt_is_reported_before_a_missing_slice() -> None:
    with pytest.raises(Rejected) as err:
        plan_layout(axial([0.0, 2.0, 4.0, 8.0, 10.0], TAN15), Policy(nonuniform_spacing="resample"))
    assert err.value.reason is Reason.GANTRY_TILT
    assert err.value.detail.startswith("slices sheared by 15.00 deg; 1 slice(s) missing")


def test_missing_slice_rejected_once_the_tilt_is_allowed() -> None:
    with pytest.raises(Rejected) as err:
        plan_layout(axial([0.0, 2.0, 4.0, 8.0, 10.0], TAN15), Policy(tilt="resample"))
    assert err.value.reason is Reason.MISSING_SLICES


@pytest.mark.parametrize(
    ("tilt", "spacing", "corrections", "raw_axis"),
    [
        ("resample", "resample", ["tilt_resampled", "spacing_resampled"], False),
        ("resample", "raw", ["tilt_resampled", "spacing_raw"], True),
        ("raw", "resample", ["tilt_raw", "spacing_resampled"], True),
        ("raw", "raw", ["tilt_raw", "spacing_raw"], True),
    ],
)
def test_tilt_and_spacing_corrections_combine(tilt: str, spacing: str, corrections: list[str], raw_axis: bool) -> None:
    """Either raw correction puts the slice axis along the first step; only both resampled keep the mean step."""
    frames = axial([0.0, 2.0, 4.0, 8.0, 10.0], TAN15)
    layout = plan_layout(frames, Policy(tilt=tilt, nonuniform_spacing=spacing))
    assert layout.corrections == corrections
    if raw_axis:
        expected = (0.0, -2.0 * math.sin(math.radians(15)), 2.0 * math.cos(math.radians(15)))
    else:
        expected = (0.0, -2.5 * TAN15, 2.5)
    np.testing.assert_allclose(layout.affine[:3, 2], expected, atol=1e-12)
