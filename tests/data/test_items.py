"""Items and splits follow the images, not the pseudonym key: two archives of the same scans ingested with
different keys train on the same images in the same order and validate on the same ones."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.items import group_split, items


def _manifest(key: str, order: np.ndarray) -> pd.DataFrame:
    """40 images of 20 patients, named by ``key`` as ingest names them (keyed series keys and patients)."""

    def keyed(text: str) -> str:
        return hashlib.sha256(f"{key}:{text}".encode()).hexdigest()[:16]

    rows = [
        {
            "output_path": f"images/{keyed(f'scan{i}')}.nii.gz",
            "series_key": keyed(f"scan{i}"),
            "patient": keyed(f"patient{i // 2}"),
            "voxel_sha256": hashlib.sha256(f"voxels{i}".encode()).hexdigest(),
            "label": (i // 2) % 2,
            "modality": "CR",
            "shape": [64, 64],
        }
        for i in range(40)
    ]
    return pd.DataFrame(rows).iloc[order].reset_index(drop=True)


def test_the_same_images_in_the_same_order_and_split_whatever_the_key():
    rng = np.random.default_rng(0)
    first = items(_manifest("key-one", rng.permutation(40)), Path("/out"), 2, 0)
    second = items(_manifest("key-two", rng.permutation(40)), Path("/out"), 2, 0)
    assert [it["voxels"] for it in first] == [it["voxels"] for it in second]
    for seed in range(3):
        (keep1, held1), (_, held2) = group_split(first, 0.2, seed), group_split(second, 0.2, seed)
        assert [it["voxels"] for it in held1] == [it["voxels"] for it in held2] and held1
        patients = {it["group"] for it in held1}
        assert not patients & {it["group"] for it in keep1}  # a patient's two images stay together
    assert {it["voxels"] for it in group_split(first, 0.2, 0)[1]} != {
        it["voxels"] for it in group_split(first, 0.2, 1)[1]
    }
