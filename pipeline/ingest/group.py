"""Group DICOM headers into stacks: by SeriesInstanceUID, then split where one series holds several stacks.

A series splits by echo and complex part (magnitude/phase), by enhanced frame type, by image size and by
orientation, as dcm2niix and SimpleITK's series details do. A split that leaves a lone frame is not a
stack but an inconsistency, and is rejected with the reason of the split.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

from pipeline.data.reasons import Reason, Rejected
from pipeline.ingest.frames import Frame
from pipeline.ingest.geometry import Layout, Policy, plan_layout, same_orientation
from pipeline.ingest.headers import DicomHeader
from pipeline.pseudonym import pseudonym

LOCALIZER_WORDS = re.compile(
    r"\b(localizer|localiser|scout|survey|topogram|3[- ]?plane|tri[- ]?pilot|aahscout)\b", re.I
)


@dataclass(slots=True)
class FrameRef:
    file: int  # index into StackPlan.files
    frame: Frame


@dataclass(slots=True)
class StackPlan:
    """One output volume (or one rejection): its files, its frames and, once checked, its layout."""

    key: str
    label: str
    files: list[DicomHeader]
    frames: list[FrameRef] = field(default_factory=list)
    layout: Layout | None = None
    reason: Reason | None = None
    detail: str = ""

    @property
    def head(self) -> DicomHeader:
        return self.files[0]


def _is_localizer(h: DicomHeader) -> bool:
    return "LOCALIZER" in h.image_type or bool(LOCALIZER_WORDS.search(h.description))


def _orientation_clusters(refs: list[FrameRef], tol: float) -> list[list[FrameRef]]:
    clusters: list[list[FrameRef]] = []
    for ref in refs:
        for cluster in clusters:
            if same_orientation(cluster[0].frame.iop, ref.frame.iop, tol):
                cluster.append(ref)
                break
        else:
            clusters.append([ref])
    return clusters


def _split(
    refs: list[FrameRef], files: list[DicomHeader], tol: float
) -> list[tuple[str, list[FrameRef], Reason | None]]:
    """Split one series' frames into stacks; yield (label, frames, rejection reason or None)."""
    by_kind: dict[tuple, list[FrameRef]] = defaultdict(list)
    for ref in refs:
        h = files[ref.file]
        by_kind[(h.split, ref.frame.split)].append(ref)
    out: list[tuple[str, list[FrameRef], Reason | None]] = []
    for k, kind_key in enumerate(sorted(by_kind)):
        kind_label = f"e{k + 1}" if len(by_kind) > 1 else ""
        # Size, channels and stored type: frames that disagree on any of them cannot share one array.
        by_shape: dict[tuple[int, ...], list[FrameRef]] = defaultdict(list)
        for ref in by_kind[kind_key]:
            h = files[ref.file]
            by_shape[(h.rows, h.cols, h.samples, h.bits_allocated, h.pixel_representation)].append(ref)
        for s, shape_key in enumerate(sorted(by_shape)):
            shape_label = f"s{s + 1}" if len(by_shape) > 1 else ""
            clusters = _orientation_clusters(by_shape[shape_key], tol)
            for o, cluster in enumerate(clusters):
                label = "_".join(p for p in (kind_label, shape_label, f"o{o + 1}" if len(clusters) > 1 else "") if p)
                reason = None
                if len(cluster) == 1 and len(clusters) > 1:
                    reason = Reason.INCONSISTENT_ORIENTATION
                elif len(cluster) == 1 and len(by_shape) > 1:
                    reason = Reason.INCONSISTENT_SHAPE
                out.append((label, cluster, reason))
    return out


def _split_copies(ident: str, files: list[DicomHeader]) -> list[tuple[str, list[DicomHeader]]]:
    """Where a SOPInstanceUID repeats across folders, each folder holds a copy: treat each on its own."""
    files.sort(key=lambda h: h.path)
    uids = [h.sop_uid for h in files if h.sop_uid]
    if len(uids) == len(set(uids)):
        return [(ident, files)]
    by_dir: dict[str, list[DicomHeader]] = defaultdict(list)
    for h in files:
        by_dir[os.path.dirname(h.path)].append(h)
    if len(by_dir) == 1:
        return [(ident, files)]
    return [(f"{ident}|{d}", fs) for d, fs in sorted(by_dir.items())]


def _series_plans(ident: str, files: list[DicomHeader], policy: Policy, key: bytes) -> list[StackPlan]:
    seen: dict[str, str] = {}
    duplicates = [h.path for h in files if h.sop_uid and seen.setdefault(h.sop_uid, h.path) != h.path]
    if duplicates:
        plan = StackPlan(pseudonym(key, ident), "", files)
        plan.reason, plan.detail = Reason.DUPLICATE_SLICES, f"{len(duplicates)} file(s) repeat a SOPInstanceUID"
        return [plan]
    plans = []
    refs = [FrameRef(i, fr) for i, h in enumerate(files) for fr in h.frames]
    for label, cluster, reason in _split(refs, files, policy.orientation_tolerance):
        used = sorted({r.file for r in cluster})
        remap = {old: new for new, old in enumerate(used)}
        plan = StackPlan(
            pseudonym(key, f"{ident}|{label}" if label else ident),
            label,
            [files[i] for i in used],
            [FrameRef(remap[r.file], r.frame) for r in cluster],
        )
        if reason is not None:
            plan.reason, plan.detail = reason, "a lone frame differs from the rest of its series"
        plans.append(plan)
    return plans


def plan_stacks(
    headers: list[DicomHeader], policy: Policy, key: bytes, reject_localizers: bool = True
) -> list[StackPlan]:
    """Turn every DICOM header into exactly one stack plan (accepted with a layout, or rejected)."""
    plans: list[StackPlan] = []
    series: dict[str, list[DicomHeader]] = defaultdict(list)
    for h in headers:
        if h.planar:
            plans.append(StackPlan(pseudonym(key, f"planar|{h.path}"), "", [h]))
        else:
            # Series number and transfer syntax too: copies of one series re-encoded or renumbered (as
            # test suites and some exports hold) are separate inputs, as dcm2niix treats them.
            uid = h.series_uid or f"{h.study}|{h.source_dir}"
            series[f"{uid}|{h.series_number}|{h.transfer_syntax}"].append(h)
    for ident, files in series.items():
        for sub_ident, sub_files in _split_copies(ident, files):
            plans.extend(_series_plans(sub_ident, sub_files, policy, key))
    for plan in plans:
        if plan.reason is not None:
            continue
        if reject_localizers and _is_localizer(plan.head):
            plan.reason, plan.detail = Reason.LOCALIZER, "localizer/scout images"
            continue
        if plan.head.planar:
            plan.frames = [FrameRef(0, fr) for fr in plan.head.frames]
        try:
            plan.layout = plan_layout([r.frame for r in plan.frames], policy, plan.head.slice_thickness)
        except Rejected as rej:
            plan.reason, plan.detail = rej.reason, rej.detail
    return plans
