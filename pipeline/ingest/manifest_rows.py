"""Manifest rows: one per series, image or rejected file, with the columns of the manifest contract."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from typing import Any

from pipeline.data.manifest import COLUMNS
from pipeline.ingest.group import StackPlan
from pipeline.ingest.headers import FileRejection, ImageFileHeader


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def input_digest(files: list[tuple[str, int, int]], settings: str) -> str:
    """Digest of what a row was made from (paths, sizes, mtimes) and the settings that shape its output.

    Equal digests let a re-run skip the work; any change to the files or the settings redoes it.
    """
    h = hashlib.sha256(settings.encode())
    for path, size, mtime in sorted(files):
        h.update(f"{path}\0{size}\0{mtime}\n".encode())
    return h.hexdigest()[:32]


def base_row(key: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS, None)
    row.update(series_key=key, status="accepted", reason="", detail="", ingested_at=_now())
    row.update(values)
    return row


def stack_row(plan: StackPlan, site: str | None, digest: str) -> dict[str, Any]:
    h = plan.head
    layout = plan.layout
    return base_row(
        plan.key,
        status="rejected" if plan.reason else "accepted",
        reason=str(plan.reason or ""),
        detail=plan.detail,
        source_dir=h.source_dir,
        n_instances=len(plan.files),
        kind="dicom",
        modality=h.modality,
        manufacturer=h.manufacturer,
        site=site or h.institution,
        transfer_syntax=h.transfer_syntax,
        patient=h.patient,
        study=h.study,
        description=h.description + (f" [{plan.label}]" if plan.label else ""),
        corrections=",".join(layout.corrections) if layout else "",
        input_digest=digest,
    )


def image_row(h: ImageFileHeader, extra: dict[str, Any]) -> dict[str, Any]:
    return base_row(
        extra["series_key"],
        source_dir=extra["source_dir"],
        n_instances=1,
        kind="image",
        modality="OT",
        manufacturer="",
        site=extra.get("site") or "",
        transfer_syntax=h.format,
        patient=extra.get("patient") or "",
        study="",
        description="",  # not the file name: public sets and PACS exports put patient numbers in it
        label=extra.get("label"),
        label_key=extra.get("label_key") or "",
        group=extra.get("group") or "",
        corrections="",
        input_digest=extra["input_digest"],
    )


def file_rejection_row(rej: FileRejection, key: str, digest: str) -> dict[str, Any]:
    return base_row(
        key,
        status="rejected",
        reason=str(rej.reason),
        detail=rej.detail,
        source_dir=os.path.dirname(rej.shown_path or rej.path),
        n_instances=1,
        kind="file",
        description=os.path.basename(rej.shown_path or rej.path),
        input_digest=digest,
    )
