"""Labelled scans: label CSV rows matched to manifest rows, the validation part a run keeps back, and the
scans an ``exclude`` list holds out of the stages that learn from unlabelled scans.

A label CSV names original files (``path,label``); the manifest names pseudonymised outputs. They meet
through the manifest's ``series_key``, which ingest derives from the file's path with the pseudonym key,
so matching needs that key but never writes a path into an output. A CSV that names scans by
``series_key`` (the review page's export) meets the manifest directly. The validation split lives here, not in
fine-tuning, because pretraining must hold the same part out (``pretrain.exclude``).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pandas as pd
from rich.console import Console

from pipeline.data.items import Item, group_split, items, scans
from pipeline.data.labels import LabelRow, read_any_labels
from pipeline.data.manifest import read_manifest, read_rows
from pipeline.data.screen import screen_and_report
from pipeline.errors import DataError
from pipeline.pseudonym import image_key, label_key, pseudonym, read_key


def _matches(manifest: pd.DataFrame, labels: Path, key: bytes | None) -> tuple[dict[str, LabelRow], int]:
    """(label row of each manifest ``series_key`` the CSV names, rows in the CSV)."""
    named, listed = read_any_labels(labels)
    if named == "series_key":
        return {k: listed[k] for k in manifest.series_key if k in listed}, len(listed)
    if key is None:
        raise DataError(
            f"no pseudonym key to match {labels.name} with (set ingest.pseudonym_key or MEDSSL_PSEUDONYM_KEY as at "
            "ingest, or name scans by series_key)"
        )
    by_key = {image_key(key, path): row for path, row in listed.items()}
    # DICOM series labelled at ingest (by a file or folder of this CSV) carry the path's label_key.
    by_label_key = {label_key(key, path): row for path, row in listed.items()}
    if "label_key" in manifest.columns:
        for series, mark in zip(manifest.series_key, manifest.label_key, strict=True):
            if isinstance(mark, str) and mark in by_label_key:
                by_key.setdefault(series, by_label_key[mark])
    return {k: by_key[k] for k in manifest.series_key if k in by_key}, len(listed)


def _key(manifest: Path, pseudonym_key: str | None) -> bytes | None:
    """The key paths are matched with; a series_key CSV needs none, so its absence is ``_matches``'s to judge."""
    return read_key(pseudonym_key, manifest.parent)


def _attach_labels(manifest: pd.DataFrame, labels: Path, key: bytes | None, console: Console) -> pd.DataFrame:
    """The manifest with ``label``, ``group`` and ``patient`` taken from the CSV (unmatched rows: no label)."""
    matched, listed = _matches(manifest, labels, key)
    if not matched:
        raise DataError(
            f"{labels}: none of its {listed} paths is an accepted row of the manifest "
            "(were the images ingested, with the same pseudonym key?)"
        )
    if unmatched := listed - len(matched):
        console.print(f"[yellow]{labels.name}: {unmatched} labelled path(s) are not accepted rows of the manifest[/]")
    rows = [matched.get(k) for k in manifest.series_key]
    return manifest.assign(
        label=[None if r is None else r.label for r in rows],
        group=[None if r is None else r.group for r in rows],
        # The CSV's patient_id when it has one, else what ingest read (a DICOM header's PatientID, keyed).
        patient=[
            pseudonym(key, r.patient_id) if key is not None and r is not None and r.patient_id else old
            for r, old in zip(rows, manifest.get("patient", [None] * len(rows)), strict=True)
        ],
    )


def labelled_rows(manifest: Path, labels: Path | None, pseudonym_key: str | None, console: Console) -> pd.DataFrame:
    """The manifest's accepted rows with the label CSV's ``label`` (None where it names no label); without a
    CSV, the labels ingest attached."""
    rows = read_manifest(manifest)
    if labels is not None:
        return _attach_labels(rows, labels, _key(manifest, pseudonym_key), console)
    if "label" not in rows.columns or rows.label.isna().all():
        raise DataError(f"{manifest}: no labelled rows; pass --labels CSV or ingest with --labels")
    return rows


def labelled_items(
    manifest: Path,
    labels: Path | None,
    pseudonym_key: str | None,
    spatial_dims: int,
    slices_per_volume: int,
    console: Console,
    classes: frozenset[int] = frozenset({0, 1}),
    held: Collection[str] = frozenset(),
) -> list[Item]:
    """Usable items (images, or slices of volumes) with a 0/1 label. ``classes``: the labels that must be
    among them (one-class scoring needs normal scans only). The ``held`` scans (``excluded_scans`` of an
    exclude list) are left out although labelled: radiologists label what the page shows them, which can
    include scans a model is judged on."""
    rows = labelled_rows(manifest, labels, pseudonym_key, console)
    if held:
        out = rows.series_key.isin(set(held))
        if judged := int((out & rows.label.notna()).sum()):
            console.print(f"[yellow]finetune: {judged} labelled scan(s) are held out by exclude: not trained on[/]")
        rows = rows[~out]
    candidates = [it for it in items(rows, manifest.parent, spatial_dims, slices_per_volume) if it["label"] is not None]
    kept, _ = screen_and_report(candidates, manifest.parent, console, "finetune")
    kept = _distinct(kept, console)
    found = {it["label"] for it in kept}
    if not classes <= found:
        wanted = " and ".join(("normal (0)", "abnormal (1)")[c] for c in sorted(classes))
        raise DataError(f"{manifest}: needs labelled {wanted} scans, has {sorted(found)}")
    return kept


def _distinct(found: list[Item], console: Console) -> list[Item]:
    """One scan per image: of labelled scans with equal voxels (one image exported twice), the first stays,
    so a label draw, a count or an AUROC takes an image once however often the archive holds it."""
    first: dict[str, str] = {}
    for it in found:
        first.setdefault(it["voxels"], it["scan"])
    kept = [it for it in found if first[it["voxels"]] == it["scan"]]
    if copies := len(scans(found)) - len(scans(kept)):
        console.print(f"finetune: {copies} labelled scan(s) with the voxels of another set aside (exact copies)")
    return kept


def validation_split(labelled: list[Item], val_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(train, validation): stratified, and no patient or near-duplicate group on both sides."""
    train, val = group_split(labelled, val_fraction, seed)
    if {it["label"] for it in val} != {0, 1}:
        raise DataError("the validation split needs normal and abnormal scans: label more or raise val_fraction")
    return train, val


def labelled_scans(manifest: Path, labels: Path, pseudonym_key: str | None) -> set[str]:
    """The manifest's scans that ``labels`` gives a 0/1 label, whatever its classes (no image file is read);
    none when the CSV names none of them (an evaluation set ingested elsewhere). Without the pseudonym key
    nothing could be matched: that is a ``DataError``, not an empty set."""
    return _labelled_among(read_manifest(manifest), manifest, labels, pseudonym_key)


def _labelled_among(rows: pd.DataFrame, manifest: Path, labels: Path, pseudonym_key: str | None) -> set[str]:
    matched, _ = _matches(rows, labels, _key(manifest, pseudonym_key))
    return {scan for scan, row in matched.items() if row.label is not None}


def excluded_scans(manifest: Path, exclude: list[Path], pseudonym_key: str | None, console: Console) -> set[str]:
    """The scans of ``manifest`` that ``exclude`` names: every row of an excluded manifest (``.parquet``, by
    ``series_key``) and every scan an excluded label CSV gives a label (matched as fine-tuning matches it).
    Each entry says how many of the manifest's scans it holds out, none included: a CSV that matches
    nothing (another key, moved files) is then seen, not silently let through."""
    rows = read_manifest(manifest)  # once, however many label CSVs are matched against it
    present = set(rows.series_key)
    held: set[str] = set()
    for path in exclude:
        named = (
            set(read_rows(path).series_key)
            if path.suffix == ".parquet"
            else _labelled_among(rows, manifest, path, pseudonym_key)
        )
        console.print(f"exclude: {path.name} holds out {len(named & present)} of the manifest's scans")
        held |= named & present
    return held
