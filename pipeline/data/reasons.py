"""Named reasons for rejecting a file or a series. Every rejection in the manifest carries one of these."""

from __future__ import annotations

import os
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
    # After ingest: a manifest row whose NIfTI is gone or no longer holds the voxels ingest wrote.
    MISSING_FILE = "MISSING_FILE"
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"


class Rejected(Exception):
    """Raised inside a stage to reject the current file or series with a reason and a one-line detail."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        # Patient identifiers read before the rejection, so the reported path can be scrubbed of them.
        self.identifiers: list[str] = []


def describe(exc: BaseException, path: str) -> str:
    """One line for a detail column: the error's type and message, with the file's folders cut away
    (library messages quote the full path, and folder names can hold a patient's name)."""
    message = str(exc).replace(path, "<file>").replace(os.path.dirname(path), "<folder>")
    return " ".join(f"{type(exc).__name__}: {message}".split())[:200]
