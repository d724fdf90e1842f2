"""Label CSVs: ``path,label`` (1 = abnormal) with optional ``patient_id``, ``site``, ``group``.

``file`` is read as a synonym of ``path`` and ``near_dup_group`` of ``group``, so the labels.csv files that
public datasets ship work as they are. Relative paths resolve against the CSV's own folder.

A CSV may name scans by the manifest's ``series_key`` instead (``series_key,label``, as ``medssl review
export`` writes it): the review page knows scans only by their keys, and a path could name a patient. Such a
CSV meets a manifest directly, without the pseudonym key; a CSV with both columns is read by its keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from pipeline.errors import LabelsError

SYNONYMS = {"file": "path", "near_dup_group": "group"}


@dataclass(frozen=True, slots=True)
class LabelRow:
    label: int | None
    patient_id: str
    site: str
    group: str


def read_labels(csv_path: str | Path) -> dict[str, LabelRow]:
    """Map each resolved absolute image path to its label row."""
    csv_path = Path(csv_path)
    df = _read(csv_path)
    if "path" not in df.columns:
        raise LabelsError(f"{csv_path}: names scans by series_key; here a 'path' (or 'file') column is needed")
    return _by_path(df, csv_path)


def read_keyed_labels(csv_path: str | Path) -> dict[str, LabelRow] | None:
    """Map each ``series_key`` to its label row; None when the CSV names scans by path."""
    named, rows = read_any_labels(csv_path)
    return rows if named == "series_key" else None


def read_any_labels(csv_path: str | Path) -> tuple[Literal["series_key", "path"], dict[str, LabelRow]]:
    """(what the CSV names scans by, its label rows by series_key or by resolved path), the file read once:
    for callers that take either form."""
    csv_path = Path(csv_path)
    df = _read(csv_path)
    if "series_key" in df.columns:
        return "series_key", {str(rec["series_key"]).strip(): row for rec, row in _rows(df, csv_path)}
    return "path", _by_path(df, csv_path)


def _by_path(df: pd.DataFrame, csv_path: Path) -> dict[str, LabelRow]:
    return {
        str((path if path.is_absolute() else csv_path.parent / path).resolve()): row
        for path, row in ((Path(rec["path"]), row) for rec, row in _rows(df, csv_path))
    }


def _read(csv_path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except OSError as exc:
        raise LabelsError(f"{csv_path}: unreadable label CSV ({exc.strerror})") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LabelsError(f"{csv_path}: unreadable label CSV ({type(exc).__name__})") from exc
    df = df.rename(columns={k: v for k, v in SYNONYMS.items() if k in df.columns and v not in df.columns})
    if "path" not in df.columns and "series_key" not in df.columns:
        raise LabelsError(f"{csv_path}: needs a 'path' (or 'file') or 'series_key' column; has {', '.join(df.columns)}")
    return df


def _rows(df: pd.DataFrame, csv_path: Path) -> list[tuple[dict, LabelRow]]:
    """(record, label row) of each CSV row, the label checked."""
    out: list[tuple[dict, LabelRow]] = []
    for n, rec in enumerate(df.to_dict("records"), start=2):
        raw = str(rec.get("label", "")).strip()
        raw = {"0.0": "0", "1.0": "1"}.get(raw, raw)  # as spreadsheets and pandas write integers
        if raw not in ("", "0", "1"):
            raise LabelsError(f"{csv_path}:{n}: label must be 0, 1 or empty, got {raw!r}")
        row = LabelRow(
            int(raw) if raw else None,
            str(rec.get("patient_id", "")),
            str(rec.get("site", "")),
            str(rec.get("group", "")),
        )
        out.append((rec, row))
    return out
