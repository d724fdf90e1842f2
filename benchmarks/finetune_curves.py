"""Label efficiency: validation AUROC against the number of labels, SSL encoder against training from scratch.

For each budget (shots per class, or a share of each class) and each arm, ``run_finetune`` runs ``--seeds``
repeats: each draws its labels from the training part of a fixed, stratified, group-disjoint split of the
labelled pool and is scored on the validation part (never on a test split). Arms, for each SSL encoder
given (``--encoder NAME=PATH``, e.g. one pretrained on this site's images and one on every site's):

- ``ssl-linear``: logistic regression on the frozen SSL encoder;
- ``ssl-full``: the SSL encoder fine-tuned end to end from that probe;
- ``scratch-full``: the same network from random weights, trained end to end.

A finished cell (arm, budget, settings) is kept in its run folder and reused, so a stopped run goes on.

Full fine-tuning runs ``ceil(4000 / labels)`` epochs (3 to 30), so small budgets get enough steps and the
100 % budget stays affordable on a CPU.

    .venv/bin/python benchmarks/finetune_curves.py --dataset pneumoniamnist \\
        --encoder benchmarks/work/pneumoniamnist/pretrain/moco-epochs80/encoder.pt --write-results
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from medmnist import export  # noqa: E402
from results import RESULTS, write_section  # noqa: E402

from pipeline.atomic import write_text  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402
from pipeline.finetune.data import Budget  # noqa: E402
from pipeline.finetune.run import run_finetune  # noqa: E402
from pipeline.ingest import run_ingest  # noqa: E402
from pipeline.plots import label_efficiency_png  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CONFIG = ROOT / "configs" / "bench-pneumoniamnist.yaml"
BUDGETS = ("1shot", "4shot", "16shot", "1%", "10%", "100%")
ARMS = {"ssl-linear": ("ssl", "linear"), "ssl-full": ("ssl", "full"), "scratch-full": ("scratch", "full")}


# name -> (folder under ../shared/data, label column, bench config)
DATASETS = {
    "pneumoniamnist": ("pneumoniamnist", "label", CONFIG),
    "cxr_nih1000": ("cxr_nih1000", "label", ROOT / "configs" / "bench-64.yaml"),
    "busi": ("busi", "label", ROOT / "configs" / "bench-64.yaml"),
    "busi-malignant": ("busi", "malignant", ROOT / "configs" / "bench-64.yaml"),
}


def dataset(name: str, work: Path, console: Console) -> tuple[Path, Path]:
    """(manifest, label CSV) of the labelled pool: PneumoniaMNIST's train images, or every image of the
    64x64 sets (their test parts are the hidden holdout); ``busi-malignant`` labels malignant vs the rest."""
    folder, column, config = DATASETS[name]
    source = SHARED / folder
    if folder == "pneumoniamnist":
        source = export(source / "pneumoniamnist_trainval.npz", work / "png", {"train": None})["train"]
    labels = source / "labels.csv"
    if column != "label":
        table = pd.read_csv(labels)
        table = table.assign(path=[str(source / p) for p in table.file], label=table[column])[["path", "label"]]
        labels = work / "labels.csv"
        labels.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(labels, index=False)
    overrides = {"ingest.sources": [str(source)], "ingest.out": str(work / "pool"), "tracking.enabled": False}
    return run_ingest(load_config(config, overrides), console).manifest, labels


def epochs_for(budget: str, pool: int) -> int:
    parsed = Budget.parse(budget)
    labels = 2 * parsed.shots if parsed.shots is not None else pool * (parsed.fraction or 0)
    return int(min(30, max(3, math.ceil(4000 / max(labels, 1)))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="pneumoniamnist", choices=sorted(DATASETS))
    ap.add_argument(
        "--encoder",
        required=True,
        nargs="+",
        help="SSL encoders (encoder.pt or models:/ URI), each as NAME=REF to name its arms, or one bare REF",
    )
    ap.add_argument("--budgets", default=",".join(BUDGETS))
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--work", type=Path, default=HERE / "work" / "curves")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(stderr=True)
    work = args.work / args.dataset
    manifest, labels = dataset(args.dataset, work, console)
    pool = len(labels.read_text().splitlines()) - 1
    encoders = dict(e.split("=", 1) if "=" in e else ("", e) for e in args.encoder)
    rows, series = [], {}
    for arm, budget, ref in cells(args.arms.split(","), args.budgets.split(","), encoders):
        mode = ARMS[arm.split(" ")[0]][1]
        overrides = {
            "finetune.encoder": ref,
            "finetune.mode": mode,
            "finetune.budget": budget,
            "finetune.seeds": args.seeds,
            "finetune.manifest": str(manifest),
            "finetune.labels": str(labels),
            "finetune.out": str(work / "runs" / f"{arm.replace(' ', '-')}-{budget}"),
            "finetune.epochs": epochs_for(budget, int(pool * 0.8)),
            "tracking.uri": f"sqlite:///{work}/mlflow.db",
            "finetune.name": f"bench-{args.dataset}",
            "finetune.register_detector": False,
        }
        row = cell(load_config(DATASETS[args.dataset][2], overrides), console)
        rows.append((arm, budget, *row))
        n, mean, sd, _, minutes, validation = row
        series.setdefault(arm, []).append((n, mean, sd))
        console.print(f"{arm} {budget}: {mean:.3f} ± {sd:.3f} ({n} labels, {minutes:.1f} min)")
    figure = HERE / f"finetune-curves-{args.dataset}.png"
    label_efficiency_png(series, figure, f"{args.dataset}: validation AUROC vs labels ({args.seeds} seeds)")
    report = render(args, rows, validation, figure)
    print(report)
    if args.write_results:
        write_section(RESULTS, f"finetune-curves-{args.dataset}", report)


def cells(arms: list[str], budgets: list[str], encoders: dict[str, str]) -> list[tuple[str, str, str]]:
    """(arm label, budget, encoder reference) of every cell; SSL arms once per named encoder."""
    out = []
    for arm in arms:
        refs = {"": "scratch"} if ARMS[arm][0] == "scratch" else encoders
        for name, ref in refs.items():
            label = f"{arm} ({name})" if name else arm
            out += [(label, budget, ref) for budget in budgets]
    return out


def cell(config: Config, console: Console) -> tuple[int, float, float, list[float], float, int]:
    """(labels used, AUROC mean, sd, per seed, minutes, validation scans) of one cell; a finished cell with
    the same settings is read back from its run folder instead of run again."""
    done = config.finetune.out / "cell.json"
    settings = config.finetune.model_dump(mode="json")
    if Path(config.finetune.encoder).is_file():  # a retrained encoder at the same path is another cell
        settings["encoder_sha256"] = hashlib.sha256(Path(config.finetune.encoder).read_bytes()).hexdigest()
    if done.is_file() and (saved := json.loads(done.read_text()))["settings"] == settings:
        return tuple(saved["row"])  # type: ignore[return-value]
    began = time.perf_counter()
    result = run_finetune(config, console)
    minutes = (time.perf_counter() - began) / 60
    row = (int(np.mean(result.labels_used)), result.mean, result.sd, result.val_auroc, minutes, result.validation_scans)
    write_text(done, json.dumps({"settings": settings, "row": row}))
    return row


def render(args: argparse.Namespace, rows: list, validation: int, figure: Path) -> str:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU. Dataset: "
        f"{args.dataset}; SSL encoders: {', '.join(f'`{e}`' for e in args.encoder)}; {validation} validation "
        "scans (a stratified, "
        f"group-disjoint fifth of the labelled pool); {args.seeds} seeds per cell (label draw and "
        f"initialisation). Figure: `{figure.relative_to(ROOT)}`.",
        "",
        "| arm | budget | labels used | AUROC mean ± sd | per seed | minutes |",
        "|---|---|---|---|---|---|",
    ]
    for arm, budget, n, mean, sd, per_seed, minutes, _ in rows:
        seeds = ", ".join(f"{a:.3f}" for a in per_seed)
        lines.append(f"| {arm} | {budget} | {n} | {mean:.3f} ± {sd:.3f} | {seeds} | {minutes:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
