"""MedMNIST npz splits as PNG files with a labels.csv per split, so they go through ``medssl ingest``
like any folder of images.

    .venv/bin/python benchmarks/medmnist.py ../shared/data/pneumoniamnist/pneumoniamnist_trainval.npz \\
        data/sample/pneumoniamnist --per-class train=50,val=30

    .venv/bin/python benchmarks/medmnist.py ../shared/data/pneumoniamnist/pneumoniamnist_trainval.npz \\
        data/sample/pneumoniamnist --per-class train=50,val=30 --archive data/sample/pneumoniamnist-archive=2000

wrote the bundled sample (the first 50 / 30 images of each class of train / val) and its unlabelled
archive: 2,000 other train images drawn at random (seed 0), in their natural class mix, with no labels, as
a hospital's archive would be: what the demo pretrains on beside the labelled scans.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.atomic import write_text


def export(npz: Path, out: Path, per_class: dict[str, int | None]) -> dict[str, Path]:
    """PNG files and labels.csv (``path,label``; 1 = abnormal) per split, written once; ``per_class``
    keeps the first N images of each class of a split (None: all)."""
    data = np.load(npz)
    folders = {}
    for split, limit in per_class.items():
        folder = folders[split] = out / split
        if (folder / "labels.csv").is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        labels = data[f"{split}_labels"][:, 0]
        keep = np.arange(len(labels))
        if limit is not None:
            keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:limit] for c in np.unique(labels)]))
        rows = []
        for i in keep:
            name = f"{split}_{i:05d}.png"
            Image.fromarray(data[f"{split}_images"][i]).save(folder / name)
            rows.append({"path": name, "label": int(labels[i])})
        write_text(folder / "labels.csv", pd.DataFrame(rows).to_csv(index=False))  # last: the split is whole
    return folders


def export_archive(npz: Path, out: Path, count: int, labelled: Path) -> Path:
    """``count`` train images not in the labelled train split, drawn with seed 0, as PNG without labels
    (written once: the folder is complete when its last file is)."""
    data = np.load(npz)
    taken = {int(name[len("train_") : -len(".png")]) for name in pd.read_csv(labelled / "labels.csv").path}
    rest = np.setdiff1d(np.arange(len(data["train_images"])), sorted(taken))
    draw = np.sort(np.random.default_rng(0).choice(rest, size=count, replace=False))
    out.mkdir(parents=True, exist_ok=True)
    for i in draw:
        target = out / f"train_{i:05d}.png"
        if not target.is_file():
            Image.fromarray(data["train_images"][i]).save(target)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("npz", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-class", default="train=,val=", help="SPLIT=N,... (empty N: every image of the split)")
    ap.add_argument(
        "--archive",
        metavar="DIR=N",
        help="also write N train images that are not labelled train images, without labels, into DIR",
    )
    args = ap.parse_args()
    per_class = {s: int(n) if n else None for s, n in (item.split("=") for item in args.per_class.split(","))}
    for split, folder in export(args.npz, args.out, per_class).items():
        print(split, folder, len(pd.read_csv(folder / "labels.csv")), "images")
    if args.archive:
        where, count = args.archive.rsplit("=", 1)
        archive = export_archive(args.npz, Path(where), int(count), args.out / "train")
        print("archive", archive, len(list(archive.glob("*.png"))), "images, unlabelled")


if __name__ == "__main__":
    main()
