"""Back from a manifest row to the DICOM files it was made from, for a later stage that must name them.

The manifest holds no UID and no file name (``series_key`` is a keyed hash); what needs the originals (the
results sent back to the PACS reference the series and instances by UID) finds them here, on disk, at the
time of use: the row's ``source_dir`` is re-read (headers only) and grouped into stacks exactly as ingest
grouped it, with the same pseudonym key, and the stack whose key is the row's ``series_key`` is the series.
So the UIDs are read in memory from the files the PACS sent and never written anywhere by medssl.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.config import IngestConfig
from pipeline.ingest.geometry import Policy
from pipeline.ingest.group import plan_stacks
from pipeline.ingest.headers import DicomHeader, read_header

# Why a row's files cannot be named: its folder or files are gone, or they no longer make that series.
SOURCE_MISSING, SOURCE_CHANGED, NOT_DICOM = "SOURCE_MISSING", "SOURCE_CHANGED", "NOT_DICOM"


@dataclass(frozen=True)
class SeriesRow:
    """What a manifest row says about where its series came from."""

    series_key: str
    source_dir: str
    n_instances: int
    kind: str


def policy(cfg: IngestConfig) -> Policy:
    """The stack checks' knobs, as ingest applies them (they decide how a series splits, hence its keys)."""
    return Policy(
        cfg.tilt, cfg.nonuniform_spacing, cfg.spacing_tolerance, cfg.orientation_tolerance, cfg.tilt_tolerance_deg
    )


def _stacks(folder: str, cfg: IngestConfig, key: bytes) -> dict[str, list[str]]:
    """Every stack key of the DICOM files directly in ``folder`` (as ingest walked them), with their paths."""
    try:
        names = sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except OSError:
        return {}
    exts = tuple(e.lower() for e in cfg.image_extensions)
    headers = [h for n in names if isinstance(h := read_header(os.path.join(folder, n), key, exts), DicomHeader)]
    return {plan.key: [h.path for h in plan.files] for plan in plan_stacks(headers, policy(cfg), key)}


def series_sources(rows: Iterable[SeriesRow], cfg: IngestConfig, key: bytes) -> dict[str, list[str] | str]:
    """For each row, the paths of the DICOM files of its series, or the reason they cannot be named.

    ``SOURCE_MISSING``: the folder or the series' files are gone (a pruned staging folder, or a folder name
    ingest had to scrub of a patient identifier); ``SOURCE_CHANGED``: the series is there with another number
    of instances than ingest converted; ``NOT_DICOM``: the row is a PNG/JPEG image, which has no UIDs. Each
    folder is read once however many rows come from it.
    """
    found: dict[str, list[str] | str] = {}
    folders: dict[str, dict[str, list[str]]] = {}
    for row in rows:
        if row.kind != "dicom":
            found[row.series_key] = NOT_DICOM
            continue
        if row.source_dir not in folders:
            folders[row.source_dir] = _stacks(row.source_dir, cfg, key)
        paths = folders[row.source_dir].get(row.series_key)
        if paths is None:
            found[row.series_key] = SOURCE_MISSING
        elif len(paths) != row.n_instances:
            found[row.series_key] = SOURCE_CHANGED
        else:
            found[row.series_key] = paths
    return found
