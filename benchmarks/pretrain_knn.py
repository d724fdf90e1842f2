"""kNN AUROC on PneumoniaMNIST's validation split after self-supervised pretraining on its train images.

Exports the npz in ../shared/data/pneumoniamnist to PNGs with label CSVs, ingests train and val with
``run_ingest`` (two manifests), pretrains each method with ``run_pretrain`` (labels unused; the monitor's
bank is the labelled train manifest, its queries the val manifest), and compares each encoder with a
random-init encoder of the same shape scored the same way. The test split is not used.

    .venv/bin/python benchmarks/pretrain_knn.py --write-results
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image
from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from results import RESULTS, write_section  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.ingest import run_ingest  # noqa: E402
from pipeline.pretrain.run import build_model, knn_monitor, run_pretrain  # noqa: E402

NPZ = ROOT.parent / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist_trainval.npz"
CONFIG = ROOT / "configs" / "bench-pneumoniamnist.yaml"
METHODS = ("simclr", "moco", "dino", "mae")


def export(work: Path) -> dict[str, Path]:
    """PNG files and a labels.csv per split (1 = pneumonia), written once."""
    data = np.load(NPZ)
    folders = {}
    for split in ("train", "val"):
        folder = work / "png" / split
        folders[split] = folder
        if (folder / "labels.csv").is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, (image, label) in enumerate(zip(data[f"{split}_images"], data[f"{split}_labels"][:, 0], strict=True)):
            name = f"{split}_{i:05d}.png"
            Image.fromarray(image).save(folder / name)
            rows.append({"path": name, "label": int(label)})
        pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folders


def ingest(folders: dict[str, Path], work: Path, console: Console) -> dict[str, Path]:
    manifests = {}
    for split, folder in folders.items():
        overrides = {
            "ingest.sources": [str(folder)],
            "ingest.out": str(work / "ingested" / split),
            "ingest.labels": [str(folder / "labels.csv")],
            "ingest.site": "pneumoniamnist",
            "tracking.enabled": False,
        }
        manifests[split] = run_ingest(load_config(CONFIG, overrides), console).manifest
    return manifests


def random_init(cfg, console: Console) -> float:
    """kNN AUROC of an untrained encoder of the same shape, seeded as the trained one was."""
    torch.manual_seed(cfg.pretrain.seed)
    return knn_monitor(cfg.pretrain, [], console)(build_model(cfg.pretrain), torch.device("cpu"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--epochs", type=int, help="override pretrain.epochs of the bench config")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (YAML value), e.g. pretrain.views.intensity=0.3; repeatable",
    )
    ap.add_argument("--work", type=Path, default=HERE / "work" / "pneumoniamnist")
    ap.add_argument("--write-results", action="store_true", help="replace the pretrain-knn section of RESULTS.md")
    args = ap.parse_args()
    console = Console(stderr=True)
    manifests = ingest(export(args.work), args.work, console)
    extra = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    variant = "-".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in extra.items()).replace(" ", "")
    rows = []
    for method in args.methods.split(","):
        overrides = {
            "pretrain.manifest": str(manifests["train"]),
            "pretrain.out": str(args.work / "pretrain" / (method + (f"-{variant}" if variant else ""))),
            "pretrain.method": method,
            "pretrain.epochs": args.epochs,
            "pretrain.monitor.bank": str(manifests["train"]),
            "pretrain.monitor.query": str(manifests["val"]),
            "pretrain.name": "bench-pneumoniamnist",
            "tracking.uri": f"sqlite:///{args.work}/mlflow.db",
            **extra,
        }
        cfg = load_config(CONFIG, overrides)
        began = time.perf_counter()
        result = run_pretrain(cfg, console)
        minutes = (time.perf_counter() - began) / 60
        baseline = random_init(cfg, console)
        rows.append((method, cfg.pretrain.epochs, result, baseline, minutes))
        console.print(f"{method}: kNN AUROC {result.knn_auroc:.3f} vs random init {baseline:.3f}")
    report = render(rows)
    print(report)
    if args.write_results:
        write_section(RESULTS, "pretrain-knn", report)


def render(rows: list) -> str:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU. "
        "Train: 4,708 images (labels unused); kNN bank: the same images with labels; queries: the 524 validation "
        "images. k = 20, cosine similarity, exp(s / 0.07) weights.",
        "",
        "| method | encoder | epochs | final loss | kNN AUROC | random init, same shape | gain | images/s | minutes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, epochs, result, baseline, minutes in rows:
        encoder = "ViT (6 x 192, patch 4)" if method == "mae" else "ResNet-18, half width"
        lines.append(
            f"| {method} | {encoder} | {epochs} | {result.loss:.3f} | {result.knn_auroc:.3f} | {baseline:.3f} "
            f"| {result.knn_auroc - baseline:+.3f} | {result.images_per_s:.0f} | "
            + ("(earlier run)" if result.skipped else f"{minutes:.1f}")
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
