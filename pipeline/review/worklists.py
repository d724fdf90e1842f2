"""The three worklists and what the page may know of a scan.

"To label" follows a ``medssl suggest`` CSV in its order; "flagged" is what the champion's latest scores
called abnormal, highest score first; "disagreements" comes from the decisions. The suggest CSV names
original files, so it is matched to the manifest as a label CSV is (keyed hashes of the paths, or the
scrubbed series folder suggest writes for a DICOM series); from there on a scan is its ``series_key`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.data.labels import read_any_labels
from pipeline.data.manifest import read_manifest
from pipeline.pseudonym import image_key, label_key
from pipeline.review.agreement import disagreements
from pipeline.review.render import ScanFile
from pipeline.review.store import Decision


@dataclass(frozen=True)
class Catalogue:
    files: dict[str, ScanFile]
    slices: dict[str, int]
    to_label: list[str]
    flagged: list[tuple[str, float]]


def catalogue(manifest: Path, suggested: Path | None, scores: Path | None, key: bytes) -> Catalogue:
    rows = read_manifest(manifest)
    files = {
        row.series_key: ScanFile(manifest.parent / row.output_path, _text(row.voxel_sha256), _text(row.modality))
        for row in rows.itertuples()
    }
    # The manifest's shape is (X, Y[, Z[, T]]): a 2D image is one slice, a 4D series shows its first volume.
    slices = {row.series_key: int(row.shape[2]) if len(row.shape) > 2 else 1 for row in rows.itertuples()}
    listed = to_label(rows, suggested, key) if suggested is not None else []
    return Catalogue(files, slices, listed, flagged(rows, scores) if scores is not None else [])


def _text(value: object) -> str:
    """A manifest string column's value; a missing one (pandas' NA, which has no truth value) is empty."""
    return value if isinstance(value, str) else ""


def to_label(rows: pd.DataFrame, csv: Path, key: bytes) -> list[str]:
    """The manifest's scans the CSV names, in its order, each once."""
    present = set(rows.series_key)
    named, listed = read_any_labels(csv)
    if named == "series_key":
        return [scan for scan in listed if scan in present]
    by_label_key: dict[str, list[str]] = {}
    for scan, mark in zip(rows.series_key, rows.get("label_key", [""] * len(rows)), strict=True):
        by_label_key.setdefault(mark or "", []).append(scan)
    by_folder: dict[str, list[str]] = {}
    for scan, folder in zip(rows.series_key, rows.source_dir, strict=True):
        for where in {str(Path(folder).resolve()), str((csv.parent / folder).resolve())}:
            by_folder.setdefault(where, []).append(scan)
    ordered: dict[str, None] = {}
    for path in listed:
        if (scan := image_key(key, path)) in present:
            ordered.setdefault(scan)
            continue
        for scan in by_label_key.get(label_key(key, path)) or by_folder.get(path, []):
            ordered.setdefault(scan)
    return list(ordered)


def flagged(rows: pd.DataFrame, scores: Path) -> list[tuple[str, float]]:
    """(scan, score) of the scans the latest scoring of each called abnormal, highest score first."""
    if not scores.is_file():
        return []
    table = pd.read_csv(scores, dtype={"series_key": str, "decision": str, "scored_at": str})
    latest = table.sort_values("scored_at").drop_duplicates("series_key", keep="last")
    hits = latest[(latest.decision == "abnormal") & latest.series_key.isin(set(rows.series_key))]
    hits = hits.sort_values("score", ascending=False, kind="stable")
    return [(str(k), float(s)) for k, s in zip(hits.series_key, hits.score, strict=True)]


def worklists(cat: Catalogue, decisions: list[Decision], reader: str) -> dict[str, dict]:
    """Each list with its count and this reader's progress; scores only on the flagged list (the others
    are read blinded)."""
    mine = {d.series_key for d in decisions if d.reader == reader}
    unsettled, settled = disagreements(decisions)

    def listing(scans: list[str], scores: dict[str, float] | None = None) -> dict:
        items = [
            {"series_key": s, "slices": cat.slices[s], "done": s in mine} | ({"score": scores[s]} if scores else {})
            for s in scans
        ]
        return {"count": len(scans), "done": sum(s in mine for s in scans), "items": items}

    return {
        "to_label": listing(cat.to_label),
        "flagged": listing([s for s, _ in cat.flagged], dict(cat.flagged)),
        "disagreements": listing(unsettled) | {"settled": len(settled)},
    }
