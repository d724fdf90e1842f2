"""From manifest rows to training items: which accepted series feed a 2D or 3D run, and the kNN split.

A 2D run takes every 2D image and a few slices of every volume; a 3D run takes the volumes. The digest of
the items (voxel hashes, slice indices) names the data an encoder was trained on, in its registry tags.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.atomic import atomic_path
from pipeline.pretrain.views import KEY


class PretrainDataError(ValueError):
    """A manifest that cannot feed pretraining; the message says what is missing."""


def read_manifest(path: Path) -> pd.DataFrame:
    """The accepted rows of an ingest manifest."""
    if not Path(path).is_file():
        raise PretrainDataError(f"manifest not found: {path}")
    try:
        manifest = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise PretrainDataError(f"{path}: not a readable manifest ({type(exc).__name__})") from exc
    missing = {"status", "output_path", "shape", "modality"} - set(manifest.columns)
    if missing:
        raise PretrainDataError(f"{path}: not an ingest manifest (no {', '.join(sorted(missing))} column)")
    return manifest[manifest.status == "accepted"].reset_index(drop=True)


def _depth(shape: Any) -> int:
    """Slices along the third axis; 1 for a 2D image."""
    return int(shape[2]) if len(shape) >= 3 else 1


def _slice_indices(depth: int, count: int) -> list[int]:
    """``count`` slices evenly spaced through the middle 80% (the ends are often air or coil falloff)."""
    if count == 0:
        return []
    return sorted({round(x) for x in np.linspace(0.1 * (depth - 1), 0.9 * (depth - 1), min(count, depth))})


def items(manifest: pd.DataFrame, root: Path, spatial_dims: int, slices_per_volume: int) -> list[dict[str, Any]]:
    """Training items: ``image`` (absolute NIfTI path), ``modality``, ``slice`` (or None), ``label``,
    ``group`` (patient or near-duplicate group, so one group stays on one side of a split), ``scan`` (the
    manifest row's key), ``voxels`` (what the digest names: equal images share it) and ``sha256`` (the
    manifest's voxel digest, which the screen checks files against)."""
    out = []
    for row in manifest.to_dict("records"):
        depth = _depth(row["shape"])
        base = {
            KEY: str(root / row["output_path"]),
            "modality": str(row["modality"] or ""),
            "label": None if pd.isna(row.get("label")) else int(row["label"]),
            # Without a patient or group, the voxel digest: exact copies stay together, and the split
            # depends on the images, not on the pseudonym key their manifest was written with.
            "group": str(row.get("group") or row.get("patient") or row.get("voxel_sha256") or row["output_path"]),
            "scan": str(row.get("series_key") or row["output_path"]),
            "voxels": str(row.get("voxel_sha256") or row["output_path"]),
            "sha256": None if pd.isna(row.get("voxel_sha256")) else str(row["voxel_sha256"]),
            "slice": None,
        }
        if spatial_dims == 3:
            out += [base] if depth > 1 else []
        elif depth == 1:
            out.append(base)
        else:
            out += [{**base, "slice": i} for i in _slice_indices(depth, slices_per_volume)]
    return out


def digest(train: list[dict[str, Any]]) -> str:
    """Content digest of a set of items: equal voxels and slices give an equal digest, wherever they live."""
    h = hashlib.sha256()
    for voxels, index in sorted((it["voxels"], -1 if it["slice"] is None else it["slice"]) for it in train):
        h.update(f"{voxels}:{index}\n".encode())
    return h.hexdigest()[:16]


def group_split(
    rows: list[dict[str, Any]], fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, held out) labelled rows: about ``fraction`` held out, stratified by label, and a ``group``
    (patient, near-duplicate group, the slices of one scan) never on both sides. Too few rows of a class, or
    too few groups, for that many folds: nothing is held out, and the caller says what it needed."""
    labels = np.array([it["label"] for it in rows])
    n_splits = max(2, round(1 / fraction))
    counts = np.unique(labels, return_counts=True)[1]
    if len(counts) < 2 or counts.min() < n_splits or len({it["group"] for it in rows}) < n_splits:
        return rows, []
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    keep, held = next(folds.split(np.zeros(len(rows)), labels, [it["group"] for it in rows]))
    return [rows[i] for i in keep], [rows[i] for i in held]


def knn_split(
    bank: list[dict[str, Any]], query: list[dict[str, Any]] | None, fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(bank, queries) of labelled items; without queries, a stratified, group-disjoint share of the bank."""
    bank = [it for it in bank if it["label"] is not None]
    if query is not None:
        return bank, [it for it in query if it["label"] is not None]
    return group_split(bank, fraction, seed)


def union_manifest(path: Path, parts: list[tuple[Path, set[str] | None]]) -> tuple[Path, int]:
    """(path, rows) of one manifest of several manifests' rows (only the scans named, where a set is given),
    their output paths made absolute so the rows of every folder resolve from the new one. Written
    atomically: a stage that finds it reads a whole one."""
    tables = []
    for manifest, scans in parts:
        table = pd.read_parquet(manifest)
        if scans is not None:
            table = table[table.series_key.isin(scans)]
        tables.append(table.assign(output_path=[str(manifest.parent.resolve() / p) for p in table.output_path]))
    union = pd.concat(tables, ignore_index=True)
    with atomic_path(path) as tmp:
        union.to_parquet(tmp)
    return path, len(union)
