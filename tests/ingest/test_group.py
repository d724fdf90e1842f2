"""Unit tests for pipeline.ingest.group.plan_stacks: DICOM headers into stacks, on in-memory DicomHeader records.

End to end, grouping is seen only through the manifest of a whole ingest. Here each rule is pinned on a few
synthetic headers: one plan per series (keyed by UID, series number and transfer syntax), the splits of one
series by echo, magnitude/phase, enhanced frame type, image size and orientation (with their labels and keys),
the lone-frame rejections, duplicate SOP instances and copies in other folders, localizers, planar images, and
that the stack checks of geometry.plan_layout (with the Policy given) land on the plan's reason.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from pipeline.data.reasons import Reason
from pipeline.ingest.frames import Frame
from pipeline.ingest.geometry import Policy
from pipeline.ingest.group import StackPlan, plan_stacks
from pipeline.ingest.headers import DicomHeader
from pipeline.pseudonym import pseudonym

KEY = b"unit-test-key"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
EXPLICIT_LE = "1.2.840.10008.1.2.1"
SERIES = "1.2.826.0.1.3680043.8.498.1"
FOLDER = "/archive/study1/series1"
BASE = np.array([-100.0, -120.0, 0.0])  # every synthetic stack starts here


def frame(z: float, iop: tuple[float, ...] = AXIAL, instance: float = 0.0, split: tuple[str, ...] = ()) -> Frame:
    """A frame at distance ``z`` along ``iop``'s normal from BASE."""
    ipp = tuple(float(v) for v in BASE + z * np.cross(iop[:3], iop[3:]))
    return Frame(0, ipp, iop, (0.5, 0.5), 1.0, 0.0, (0.0, 0.0, instance, 0.0), split)  # type: ignore[arg-type]


def header(
    name: str,
    z: float = 0.0,
    *,
    iop: tuple[float, ...] = AXIAL,
    frames: list[Frame] | None = None,
    folder: str = FOLDER,
    sop_uid: str | None = None,
    series_uid: str = SERIES,
    series_number: str = "3",
    transfer_syntax: str = EXPLICIT_LE,
    split: tuple[str, ...] = ("1", ""),
    rows: int = 4,
    cols: int = 4,
    samples: int = 1,
    bits_allocated: int = 16,
    pixel_representation: int = 0,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    description: str = "AX T1",
    modality: str = "MR",
    planar: bool = False,
    slice_thickness: float = 2.0,
) -> DicomHeader:
    """One classic single-frame header (or the given frames) of a series, as read_header would give it."""
    path = f"{folder}/{name}.dcm"
    return DicomHeader(
        path=path,
        source_dir=folder,
        size=1000,
        mtime_ns=0,
        sop_uid=sop_uid if sop_uid is not None else f"sop:{path}",
        series_uid=series_uid,
        series_number=series_number,
        patient="p",
        study="study-hash",
        modality=modality,
        manufacturer="ACME",
        institution="",
        description=description,
        image_type=image_type,
        transfer_syntax=transfer_syntax,
        rows=rows,
        cols=cols,
        samples=samples,
        photometric="MONOCHROME2",
        bits_allocated=bits_allocated,
        bits_stored=bits_allocated,
        pixel_representation=pixel_representation,
        pixel_offset=-1,
        little_endian=True,
        n_frames=len(frames) if frames else 1,
        mosaic_grid=0,
        planar=planar,
        split=split,
        slice_thickness=slice_thickness,
        frames=frames if frames is not None else [frame(z, iop, instance=z)],
    )


def series(prefix: str, zs: list[float], **fields: object) -> list[DicomHeader]:
    return [header(f"{prefix}{n:02d}", z, **fields) for n, z in enumerate(zs)]  # type: ignore[arg-type]


def ident(uid: str = SERIES, number: str = "3", ts: str = EXPLICIT_LE) -> str:
    return f"{uid}|{number}|{ts}"


def positions(plan: StackPlan) -> list[float]:
    """Each slice's distance from BASE along the normal, in the layout's order."""
    assert plan.layout is not None, plan.detail
    normal = np.cross(plan.frames[0].frame.iop[:3], plan.frames[0].frame.iop[3:])
    return [round(float(np.dot(plan.frames[i].frame.ipp - BASE, normal)), 6) for i in plan.layout.order[0]]


def by_label(plans: list[StackPlan]) -> dict[str, StackPlan]:
    out = {p.label: p for p in plans}
    assert len(out) == len(plans)
    return out


# --- one plan per series -------------------------------------------------------------------------------------


def test_each_series_is_one_sorted_stack() -> None:
    a = series("a", [4.0, 0.0, 2.0])
    b = series("b", [2.0, 6.0, 4.0, 0.0], series_uid="1.2.3.9", description="AX T2")
    plans = plan_stacks([b[0], a[0], b[1], a[1], b[2], a[2], b[3]], Policy(), KEY)
    assert len(plans) == 2
    first, second = plans
    assert first.key == pseudonym(KEY, ident("1.2.3.9"))
    assert second.key == pseudonym(KEY, ident())
    for plan, files in ((first, b), (second, a)):
        assert plan.reason is None and plan.label == ""
        assert [h.path for h in plan.files] == sorted(h.path for h in files)
        assert plan.head is plan.files[0]
        # Every frame points into the plan's own file list.
        assert all(plan.files[r.file].frames[0] is r.frame for r in plan.frames)
    assert positions(first) == [0.0, 2.0, 4.0, 6.0]
    assert positions(second) == [0.0, 2.0, 4.0]


@pytest.mark.parametrize(
    "other",
    [{"series_number": "4"}, {"transfer_syntax": "1.2.840.10008.1.2.4.90"}, {"series_uid": "1.2.3.10"}],
)
def test_series_number_and_transfer_syntax_separate_copies(other: dict[str, str]) -> None:
    """A series renumbered or re-encoded is a separate input, as dcm2niix treats it."""
    plans = plan_stacks(series("a", [0.0, 2.0, 4.0]) + series("b", [0.0, 2.0, 4.0], **other), Policy(), KEY)
    assert [p.reason for p in plans] == [None, None]
    expected = {
        "uid": other.get("series_uid", SERIES),
        "number": other.get("series_number", "3"),
        "ts": other.get("transfer_syntax", EXPLICIT_LE),
    }
    assert [p.key for p in plans] == [pseudonym(KEY, ident()), pseudonym(KEY, ident(**expected))]
    assert [p.layout.n_slices for p in plans if p.layout] == [3, 3]


def test_without_a_series_uid_the_folder_groups() -> None:
    a = series("a", [0.0, 2.0, 4.0], series_uid="", folder="/archive/x")
    b = series("b", [0.0, 2.0], series_uid="", folder="/archive/y")
    plans = plan_stacks(a + b, Policy(), KEY)
    assert [p.key for p in plans] == [
        pseudonym(KEY, f"study-hash|/archive/x|3|{EXPLICIT_LE}"),
        pseudonym(KEY, f"study-hash|/archive/y|3|{EXPLICIT_LE}"),
    ]
    assert [len(p.files) for p in plans] == [3, 2]
    assert all(p.reason is None for p in plans)


def test_single_slice_series_uses_its_slice_thickness() -> None:
    (plan,) = plan_stacks([header("only", 7.0, slice_thickness=3.0)], Policy(), KEY)
    assert plan.reason is None and plan.layout is not None
    assert plan.layout.order == [[0]]
    np.testing.assert_allclose(plan.layout.affine[:3, 2], [0.0, 0.0, 3.0])


def test_planar_images_are_one_plan_each() -> None:
    xrays = [
        header(f"dx{n}", modality="DX", planar=True, image_type=("ORIGINAL", "PRIMARY"), slice_thickness=0.0)
        for n in range(2)
    ]
    plans = plan_stacks(xrays, Policy(), KEY)
    assert [p.key for p in plans] == [pseudonym(KEY, f"planar|{h.path}") for h in xrays]
    for plan, h in zip(plans, xrays, strict=True):
        assert plan.files == [h] and plan.reason is None and plan.layout is not None
        assert [r.frame for r in plan.frames] == h.frames
        assert (plan.layout.n_slices, plan.layout.n_volumes) == (1, 1)
        np.testing.assert_allclose(plan.layout.affine[:3, 2], [0.0, 0.0, 1.0])


def test_planar_cine_frames_are_volumes() -> None:
    """A multi-frame planar image (cine): every frame at the default position, one volume per frame."""
    frames = [Frame(f, (0.0, 0.0, 0.0), AXIAL, (1.0, 1.0), 1.0, 0.0, (0.0, 0.0, 1.0, float(f))) for f in range(3)]
    (plan,) = plan_stacks([header("us", modality="US", planar=True, frames=frames)], Policy(), KEY)
    assert plan.reason is None and plan.layout is not None
    assert (plan.layout.n_volumes, plan.layout.n_slices) == (3, 1)
    assert plan.layout.order == [[0], [1], [2]]


# --- splits of one series ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("1", ""), ("2", "")),  # two echoes
        (("0", "M"), ("0", "P")),  # magnitude and phase
        (("2", "M"), ("2", "R")),  # magnitude and real
    ],
)
def test_series_splits_by_echo_and_complex_part(first: tuple[str, str], second: tuple[str, str]) -> None:
    one = series("x", [0.0, 2.0, 4.0], split=first)
    two = series("y", [0.0, 2.0, 4.0], split=second)
    plans = plan_stacks([two[0], one[0], two[1], one[1], two[2], one[2]], Policy(), KEY)
    labelled = by_label(plans)
    assert sorted(labelled) == ["e1", "e2"]
    assert labelled["e1"].key == pseudonym(KEY, f"{ident()}|e1")
    assert labelled["e2"].key == pseudonym(KEY, f"{ident()}|e2")
    assert {h.split for h in labelled["e1"].files} == {first}
    assert {h.split for h in labelled["e2"].files} == {second}
    for plan in plans:
        assert plan.reason is None
        assert positions(plan) == [0.0, 2.0, 4.0]


def test_enhanced_frames_split_by_frame_type_within_one_file() -> None:
    """One multi-frame object holding magnitude and phase frames: two stacks that share the file."""
    frames = [frame(z, instance=z, split=("M", "10")) for z in (0.0, 2.0, 4.0)]
    frames += [frame(z, instance=z, split=("P", "10")) for z in (4.0, 2.0, 0.0)]
    enhanced = header("enh", frames=frames)
    plans = plan_stacks([enhanced], Policy(), KEY)
    labelled = by_label(plans)
    assert sorted(labelled) == ["e1", "e2"]
    assert [r.frame.split for r in labelled["e1"].frames] == [("M", "10")] * 3
    assert [r.frame.split for r in labelled["e2"].frames] == [("P", "10")] * 3
    for plan in plans:
        assert plan.files == [enhanced]
        assert {r.file for r in plan.frames} == {0}
        assert positions(plan) == [0.0, 2.0, 4.0]


@pytest.mark.parametrize(
    "field",
    [
        {"rows": 8},
        {"cols": 8},
        {"samples": 3},
        {"bits_allocated": 32},
        {"pixel_representation": 1},
    ],
)
def test_series_splits_by_image_size_and_stored_type(field: dict[str, int]) -> None:
    small = series("a", [0.0, 2.0, 4.0])
    other = series("b", [0.0, 2.0], **field)
    plans = plan_stacks(small + other, Policy(), KEY)
    labelled = by_label(plans)
    assert sorted(labelled) == ["s1", "s2"]
    # Sizes sort ascending, so the default 4x4 / 1 sample / 16-bit unsigned stack is s1.
    assert labelled["s1"].files == small
    assert labelled["s2"].files == other
    assert labelled["s2"].key == pseudonym(KEY, f"{ident()}|s2")
    assert all(p.reason is None for p in plans)


def test_a_lone_frame_of_another_size_is_an_inconsistent_shape() -> None:
    rest = series("a", [0.0, 2.0, 4.0, 6.0])
    cropped = header("b", 8.0, rows=3, cols=3)
    labelled = by_label(plan_stacks([*rest, cropped], Policy(), KEY))
    assert labelled["s1"].files == [cropped]
    assert labelled["s1"].reason is Reason.INCONSISTENT_SHAPE
    assert labelled["s1"].detail == "a lone frame differs from the rest of its series"
    assert labelled["s1"].layout is None
    assert labelled["s2"].reason is None
    assert positions(labelled["s2"]) == [0.0, 2.0, 4.0, 6.0]


def test_a_cropped_middle_slice_leaves_the_rest_missing_a_slice() -> None:
    rest = series("a", [0.0, 2.0, 6.0, 8.0])
    labelled = by_label(plan_stacks([*rest, header("b", 4.0, rows=3)], Policy(), KEY))
    assert labelled["s1"].reason is Reason.INCONSISTENT_SHAPE
    assert labelled["s2"].reason is Reason.MISSING_SLICES


def test_series_splits_by_orientation_and_remaps_file_indices() -> None:
    """Axial and sagittal files interleaved by path: each stack's frames index its own file list."""
    files = [header(f"f{n}", 2.0 * (n // 2), iop=AXIAL if n % 2 == 0 else SAGITTAL) for n in range(6)]
    labelled = by_label(plan_stacks(files, Policy(), KEY))
    assert sorted(labelled) == ["o1", "o2"]
    assert labelled["o1"].files == files[0::2]  # the orientation of the first file by path comes first
    assert labelled["o2"].files == files[1::2]
    assert labelled["o2"].key == pseudonym(KEY, f"{ident()}|o2")
    for plan, iop in ((labelled["o1"], AXIAL), (labelled["o2"], SAGITTAL)):
        assert plan.reason is None
        assert sorted(r.file for r in plan.frames) == [0, 1, 2]
        assert all(plan.files[r.file].frames[0] is r.frame and r.frame.iop == iop for r in plan.frames)
        assert positions(plan) == [0.0, 2.0, 4.0]


def test_a_lone_frame_of_another_orientation_is_inconsistent() -> None:
    a = math.radians(5)
    tilted = (1.0, 0.0, 0.0, 0.0, math.cos(a), math.sin(a))
    files = series("a", [0.0, 2.0, 4.0, 6.0])
    files.insert(2, header("a015", 3.0, iop=tilted))
    labelled = by_label(plan_stacks(files, Policy(), KEY))
    assert sorted(labelled) == ["o1", "o2"]
    assert labelled["o2"].files == [files[2]]
    assert labelled["o2"].reason is Reason.INCONSISTENT_ORIENTATION
    assert labelled["o2"].detail == "a lone frame differs from the rest of its series"
    assert labelled["o1"].reason is None
    assert positions(labelled["o1"]) == [0.0, 2.0, 4.0, 6.0]


@pytest.mark.parametrize(
    ("delta", "tolerance", "reasons"),
    [
        (1e-4, 1e-3, {"": None}),
        # Split off, the second half's positions (along z) are sheared against its own normal by ~0.6 deg.
        (1e-2, 1e-3, {"o1": None, "o2": Reason.GANTRY_TILT}),
        (1e-2, 2e-2, {"": None}),
    ],
)
def test_orientation_split_uses_the_policy_tolerance(
    delta: float, tolerance: float, reasons: dict[str, Reason | None]
) -> None:
    nearly = (1.0, 0.0, 0.0, 0.0, 1.0 - delta, delta)
    files = series("a", [0.0, 2.0, 4.0]) + series("b", [6.0, 8.0, 10.0])
    for h in files[3:]:  # same positions along z, the cosines off by delta
        h.frames[0].iop = nearly
    plans = plan_stacks(files, Policy(orientation_tolerance=tolerance), KEY)
    assert {p.label: p.reason for p in plans} == reasons
    assert [len(p.files) for p in plans] == ([6] if len(plans) == 1 else [3, 3])


# --- duplicates and copies -----------------------------------------------------------------------------------


def test_a_repeated_sop_instance_in_one_folder_rejects_the_series() -> None:
    files = series("a", [0.0, 2.0, 4.0])
    files.append(header("a99", 6.0, sop_uid=files[1].sop_uid))
    (plan,) = plan_stacks(files, Policy(), KEY)
    assert plan.reason is Reason.DUPLICATE_SLICES
    assert plan.detail == "1 file(s) repeat a SOPInstanceUID"
    assert plan.layout is None
    assert sorted(h.path for h in plan.files) == sorted(h.path for h in files)


def test_copies_of_a_series_in_two_folders_are_two_stacks() -> None:
    first = series("a", [0.0, 2.0, 4.0], folder="/archive/copy1")
    second = [
        header(f"a{n:02d}", z, folder="/archive/copy2", sop_uid=h.sop_uid)
        for n, (z, h) in enumerate(zip([0.0, 2.0, 4.0], first, strict=True))
    ]
    plans = plan_stacks(second + first, Policy(), KEY)
    assert [p.key for p in plans] == [pseudonym(KEY, f"{ident()}|/archive/copy{n}") for n in (1, 2)]
    assert [p.files for p in plans] == [first, second]
    assert all(p.reason is None and positions(p) == [0.0, 2.0, 4.0] for p in plans)


def test_two_frames_at_one_position_are_duplicate_slices() -> None:
    """Distinct SOP instances, one position, one time point: geometry's DUPLICATE_SLICES."""
    files = series("a", [0.0, 2.0, 4.0])
    files.append(header("a99", 2.0))  # same instance number as a01 (its z), so the same temporal key
    (plan,) = plan_stacks(files, Policy(), KEY)
    assert plan.reason is Reason.DUPLICATE_SLICES
    assert plan.layout is None


# --- localizers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_type", "description"),
    [
        (("ORIGINAL", "PRIMARY", "LOCALIZER"), "AX T1"),
        (("ORIGINAL", "PRIMARY"), "Scout"),
        (("ORIGINAL", "PRIMARY"), "3-plane loc"),
        (("ORIGINAL", "PRIMARY"), "3 Plane"),
        (("ORIGINAL", "PRIMARY"), "Tri-Pilot"),
        (("ORIGINAL", "PRIMARY"), "AAHScout"),
        (("ORIGINAL", "PRIMARY"), "Topogram 0.6 T20f"),
        (("ORIGINAL", "PRIMARY"), "Survey"),
        (("ORIGINAL", "PRIMARY"), "localiser"),
    ],
)
def test_localizers_are_rejected_unless_asked_to_keep_them(image_type: tuple[str, ...], description: str) -> None:
    files = series("a", [0.0, 2.0, 4.0], image_type=image_type, description=description)
    (plan,) = plan_stacks(files, Policy(), KEY)
    assert plan.reason is Reason.LOCALIZER
    assert plan.detail == "localizer/scout images"
    assert plan.layout is None
    (kept,) = plan_stacks(files, Policy(), KEY, reject_localizers=False)
    assert kept.reason is None
    assert positions(kept) == [0.0, 2.0, 4.0]


@pytest.mark.parametrize("description", ["AX T2 FLAIR", "scouting run", "plane 3D"])
def test_ordinary_descriptions_are_not_localizers(description: str) -> None:
    (plan,) = plan_stacks(series("a", [0.0, 2.0, 4.0], description=description), Policy(), KEY)
    assert plan.reason is None


def test_a_localizer_with_bad_geometry_is_still_a_localizer() -> None:
    files = series("a", [0.0, 2.0, 4.0, 8.0], description="scout")
    (plan,) = plan_stacks(files, Policy(), KEY)
    assert plan.reason is Reason.LOCALIZER


# --- stack checks and policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zs", "shear", "policy", "reason", "corrections"),
    [
        ([0.0, 2.0, 4.0, 8.0], 0.0, Policy(), Reason.MISSING_SLICES, None),
        ([0.0, 2.0, 5.0, 7.0], 0.0, Policy(), Reason.NONUNIFORM_SPACING, None),
        ([0.0, 2.0, 4.0, 8.0], 0.0, Policy(nonuniform_spacing="resample"), None, ["spacing_resampled"]),
        ([0.0, 2.0, 4.0], 0.3, Policy(), Reason.GANTRY_TILT, None),
        ([0.0, 2.0, 4.0], 0.3, Policy(tilt="raw"), None, ["tilt_raw"]),
        ([0.0, 2.0, 4.0], 0.3, Policy(tilt="resample"), None, ["tilt_resampled"]),
    ],
)
def test_stack_checks_land_on_the_plan(
    zs: list[float], shear: float, policy: Policy, reason: Reason | None, corrections: list[str] | None
) -> None:
    files = series("a", zs)
    for h in files:  # shear along y in proportion to z: a gantry tilt
        x, y, z = h.frames[0].ipp
        h.frames[0].ipp = (x, y + shear * z, z)
    (plan,) = plan_stacks(files, policy, KEY)
    assert plan.reason is reason
    if reason is None:
        assert plan.layout is not None and plan.layout.corrections == corrections
    else:
        assert plan.layout is None and plan.detail


def test_every_header_lands_in_exactly_one_plan() -> None:
    headers = [
        *series("a", [0.0, 2.0, 4.0]),
        *series("b", [0.0, 2.0, 4.0], split=("2", "")),
        *series("c", [0.0, 2.0, 4.0], series_uid="1.2.3.11", description="localizer"),
        *series("d", [0.0, 2.0, 6.0], series_uid="1.2.3.12"),
        header("dx", modality="DX", planar=True),
        header("e", 0.0, series_uid="1.2.3.13", rows=3),
    ]
    plans = plan_stacks(headers, Policy(), KEY)
    assert Counter(h.path for p in plans for h in p.files) == Counter(h.path for h in headers)
    assert len({p.key for p in plans}) == len(plans)
    reasons = Counter(p.reason for p in plans)
    assert reasons == Counter({None: 4, Reason.LOCALIZER: 1, Reason.MISSING_SLICES: 1})
