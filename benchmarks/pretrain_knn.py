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
import torch
import yaml
from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from medmnist import export  # noqa: E402
from results import RESULTS, SHARED, section_rows, write_section  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.ingest import run_ingest  # noqa: E402
from pipeline.pretrain import run_pretrain  # noqa: E402
from pipeline.pretrain.model import build_model  # noqa: E402
from pipeline.pretrain.monitor import knn_monitor  # noqa: E402

NPZ = SHARED / "pneumoniamnist" / "pneumoniamnist_trainval.npz"
CONFIG = ROOT / "configs" / "bench-pneumoniamnist.yaml"
METHODS = ("simclr", "moco", "dino", "mae")


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


def random_init(cfg, console: Console, seeds: int = 5) -> list[float]:
    """kNN AUROC of untrained encoders of the same shape, one per seed from the trained one's: a single
    draw can be lucky (for the half-width ResNet-18 they span 0.985-0.990 on this split)."""
    monitor = knn_monitor(cfg.pretrain, [], console)
    scores = []
    for seed in range(cfg.pretrain.seed, cfg.pretrain.seed + seeds):
        torch.manual_seed(seed)
        scores.append(monitor(build_model(cfg.pretrain), torch.device("cpu")))
    return scores


def epochs_for(method: str, spec: str) -> int | None:
    """Epochs for ``method`` from ``--epochs`` ("80" or "simclr=80,moco=80"); None keeps the config's.

    A run's output folder is named by its overrides, so ``--epochs moco=80`` finds the finished run of
    ``--set pretrain.epochs=80`` and does not train it again."""
    if not spec:
        return None
    if "=" not in spec:
        return int(spec)
    per_method = dict(item.split("=", 1) for item in spec.split(","))
    return int(per_method[method]) if method in per_method else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument(
        "--epochs",
        default="",
        help="override pretrain.epochs of the bench config: N for every method, or METHOD=N,... per method",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (YAML value), e.g. pretrain.views.intensity=0.3; repeatable",
    )
    ap.add_argument("--work", type=Path, default=HERE / "work" / "pneumoniamnist")
    ap.add_argument(
        "--write-results",
        action="store_true",
        help="write the pretrain-knn section of RESULTS.md (rows of methods not run this time are kept)",
    )
    args = ap.parse_args()
    console = Console(stderr=True)
    manifests = ingest(export(NPZ, args.work / "png", {"train": None, "val": None}), args.work, console)
    rows = []
    for method in args.methods.split(","):
        extra = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
        if (epochs := epochs_for(method, args.epochs)) is not None:
            extra["pretrain.epochs"] = epochs
        variant = "-".join(f"{k.rsplit('.', 1)[-1]}{v}" for k, v in extra.items()).replace(" ", "")
        overrides = {
            "pretrain.manifest": str(manifests["train"]),
            "pretrain.out": str(args.work / "pretrain" / (method + (f"-{variant}" if variant else ""))),
            "pretrain.method": method,
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
        seeds = ", ".join(f"{score:.4f}" for score in baseline)
        console.print(f"{method}: kNN AUROC {result.knn_auroc:.4f} vs random init {np.mean(baseline):.4f} ({seeds})")
    ran = {row[0] for row in rows}
    earlier = [line for line in section_rows(RESULTS, "pretrain-knn") if line.split("|")[1].strip() not in ran]
    report = render(rows, earlier)
    print(report)
    if args.write_results:
        write_section(RESULTS, "pretrain-knn", report)


def render(rows: list, earlier: list[str]) -> str:
    """The table: this run's rows and ``earlier`` (rows of other methods kept from RESULTS.md), in METHODS order."""
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU. "
        "Train: 4,708 images (labels unused); kNN bank: the same images with labels; queries: the 524 validation "
        "images. k = 20, cosine similarity, exp(s / 0.07) weights. Random init: mean ± sd of 5 seeds; the gain is "
        "against the mean, and the last column says whether the trained encoder beats every seed.",
        "",
        "| method | encoder | epochs | final loss | kNN AUROC | random init, same shape | gain | images/s | minutes "
        "| above every seed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    table = list(earlier)
    for method, epochs, result, baseline, minutes in rows:
        encoder = "ViT (6 x 192, patch 4)" if method == "mae" else "ResNet-18, half width"
        table.append(
            f"| {method} | {encoder} | {epochs} | {result.loss:.3f} | {result.knn_auroc:.3f} "
            f"| {np.mean(baseline):.3f} ± {np.std(baseline):.3f} | {result.knn_auroc - np.mean(baseline):+.3f} "
            f"| {result.images_per_s:.0f} | "
            + ("(earlier run)" if result.skipped else f"{minutes:.1f}")
            + f" | {'yes' if result.knn_auroc > max(baseline) else 'no'} |"
        )
    order = {method: i for i, method in enumerate(METHODS)}
    table.sort(key=lambda line: order.get(line.split("|")[1].strip(), len(order)))
    return "\n".join(lines + table)


if __name__ == "__main__":
    main()
