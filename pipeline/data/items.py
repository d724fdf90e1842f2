"""From manifest rows to items: the unit every training, evaluation and scoring pass reads.

An item is one 2D image, one slice of a volume (2D runs) or one volume (3D runs). A scan is a manifest row;
``scan`` (its ``series_key``) is the one identity results are drawn, counted and reported by. ``voxels``
(the voxel digest ingest wrote) names the content: the digest of a set of items is computed from it, so
equal images give an equal digest wherever they live.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from pipeline.data.transforms import KEY


class Item(TypedDict):
    """One item; a plain dict at run time, so MONAI's dictionary transforms take it as it is."""

    image: str  # absolute NIfTI path (``transforms.KEY``)
    modality: str
    slice: int | None  # of a volume, in a 2D run; None: the whole image or volume
    label: int | None
    group: str  # patient or near-duplicate group: one group stays on one side of a split
    scan: str  # the manifest row's series_key
    voxels: str  # the manifest's voxel digest (or the output path when it has none)
    sha256: str | None  # the voxel digest the screen checks the file against


def _depth(shape: Any) -> int:
    """Slices along the third axis; 1 for a 2D image."""
    return int(shape[2]) if len(shape) >= 3 else 1


def _slice_indices(depth: int, count: int) -> list[int]:
    """``count`` slices evenly spaced through the middle 80% (the ends are often air or coil falloff)."""
    if count == 0:
        return []
    return sorted({round(x) for x in np.linspace(0.1 * (depth - 1), 0.9 * (depth - 1), min(count, depth))})


def items(manifest: pd.DataFrame, root: Path, spatial_dims: int, slices_per_volume: int) -> list[Item]:
    """The items of the manifest's rows for a ``spatial_dims`` run: a 2D run takes every 2D image and
    ``slices_per_volume`` slices of every volume; a 3D run takes the volumes. They come in the order of
    their content (voxel digest, slice), not of the manifest, whose keyed series keys order it by the
    pseudonym key: training meets the same images in the same order whatever key an archive was given."""
    out: list[Item] = []
    for row in manifest.to_dict("records"):
        depth = _depth(row["shape"])
        base = Item(
            {
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
        )
        if spatial_dims == 3:
            out += [base] if depth > 1 else []
        elif depth == 1:
            out.append(base)
        else:
            out += [Item({**base, "slice": i}) for i in _slice_indices(depth, slices_per_volume)]
    return sorted(out, key=lambda it: (it["voxels"], -1 if it["slice"] is None else it["slice"], it["scan"]))


def scans(found: Sequence[Item]) -> set[str]:
    """The scans a list of items comes from (a volume's slices are one scan)."""
    return {it["scan"] for it in found}


def digest(found: Sequence[Item]) -> str:
    """Content digest of a set of items: equal voxels and slices give an equal digest, wherever they live."""
    h = hashlib.sha256()
    for voxels, index in sorted((it["voxels"], -1 if it["slice"] is None else it["slice"]) for it in found):
        h.update(f"{voxels}:{index}\n".encode())
    return h.hexdigest()[:16]


def group_split(rows: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(kept, held out) labelled rows: about ``fraction`` held out, stratified by label, and a ``group``
    (patient, near-duplicate group, the slices of one scan) never on both sides. Too few rows of a class, or
    too few groups, for that many folds: nothing is held out, and the caller says what it needed."""
    labels = np.array([it["label"] for it in rows])
    n_splits = max(2, round(1 / fraction))
    counts = np.unique(labels, return_counts=True)[1]
    if len(counts) < 2 or counts.min() < n_splits or len({it["group"] for it in rows}) < n_splits:
        return rows, []
    # A group is named by its content (its first voxel digest), not by its keyed patient pseudonym, so the
    # folds hold the same images whatever pseudonym key the archive was ingested with.
    named: dict[str, str] = {}
    for it in rows:
        named[it["group"]] = min(named.get(it["group"], it["voxels"]), it["voxels"])
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    keep, held = next(folds.split(np.zeros(len(rows)), labels, [named[it["group"]] for it in rows]))
    return [rows[i] for i in keep], [rows[i] for i in held]
