"""Named reasons for rejecting a file or a series. Every rejection in the manifest carries one of these."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    NOT_AN_IMAGE = "NOT_AN_IMAGE"
    CORRUPT_FILE = "CORRUPT_FILE"
    UNREADABLE_FILE = "UNREADABLE_FILE"
    UNSUPPORTED_TRANSFER_SYNTAX = "UNSUPPORTED_TRANSFER_SYNTAX"
    INCONSISTENT_ORIENTATION = "INCONSISTENT_ORIENTATION"
    INCONSISTENT_SHAPE = "INCONSISTENT_SHAPE"
    MISSING_SLICES = "MISSING_SLICES"
    NONUNIFORM_SPACING = "NONUNIFORM_SPACING"
    GANTRY_TILT = "GANTRY_TILT"
    DUPLICATE_SLICES = "DUPLICATE_SLICES"
    LOCALIZER = "LOCALIZER"
    MISSING_GEOMETRY = "MISSING_GEOMETRY"
    DECODE_FAILED = "DECODE_FAILED"


class Rejected(Exception):
    """Raised inside a stage to reject the current file or series with a reason and a one-line detail."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
