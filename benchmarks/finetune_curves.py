"""Label efficiency: validation AUROC against the number of labels, SSL encoder against training from scratch.

For each budget (shots per class, or a share of each class) and each arm, ``run_finetune`` runs ``--seeds``
repeats: each draws its labels from the training part of a fixed, stratified, group-disjoint split of the
labelled pool and is scored on the validation part (never on a test split). Arms, for each SSL encoder
given (``--encoder NAME=PATH``, e.g. one pretrained on this site's images and one on every site's):

- ``ssl-linear``: logistic regression on the frozen SSL encoder;
- ``ssl-full``: the SSL encoder fine-tuned end to end from that probe;
- ``scratch-full``: the same network from random weights, trained end to end.

A finished cell (arm, budget, settings) is kept in its run folder and reused, so a stopped run goes on.

``--pretrain site pooled`` first pretrains the SSL encoders with the bench config's pretrain section (no
labels): ``site`` on the training part of this pool only, ``pooled`` on it and on every image of the other
sites of the same modality in ../shared/data (all chest X-rays), as a hospital would on its archive, for
as many images seen (epochs x images) as ``site``, so the two differ in data, not in compute. The
validation part is never pretrained on.

Full fine-tuning runs ``ceil(4000 / labels)`` epochs (3 to 30), so small budgets get enough steps and the
100 % budget stays affordable on a CPU.

    .venv/bin/python benchmarks/finetune_curves.py --dataset pneumoniamnist --pretrain site --write-results
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
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from medmnist import export  # noqa: E402
from results import RESULTS, section_rows, write_section  # noqa: E402

from pipeline.atomic import write_text  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402
from pipeline.data.budget import Budget  # noqa: E402
from pipeline.data.labelled import labelled_items, validation_split  # noqa: E402
from pipeline.data.manifest import union_manifest  # noqa: E402
from pipeline.finetune import run_finetune  # noqa: E402
from pipeline.ingest import run_ingest  # noqa: E402
from pipeline.pretrain import run_pretrain  # noqa: E402
from pipeline.report import label_efficiency_png  # noqa: E402

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
MODALITY = {"pneumoniamnist": "CXR", "cxr_nih1000": "CXR", "busi": "US", "busi-malignant": "US"}


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


def pool_parts(manifest: Path, labels: Path, config: Config, console: Console) -> tuple[list[dict], list[dict]]:
    """The items of the pool's training and validation parts: the split ``run_finetune`` makes with the same
    settings."""
    items = labelled_items(manifest, labels, config.ingest.secret(), 2, 0, console)
    return validation_split(items, config.finetune.val_fraction, config.finetune.seed)


def pretrain_encoders(
    name: str, kinds: list[str], manifest: Path, train: list[dict], work: Path, console: Console
) -> dict[str, str]:
    """NAME -> encoder.pt of each SSL encoder ``kinds`` asks for, pretrained without labels on the pool's
    training part ``train`` and, for ``pooled``, the other sites (see the docstring)."""
    config = load_config(DATASETS[name][2], {"tracking.uri": f"sqlite:///{work / name}/mlflow.db"})
    scans = {it["scan"] for it in train}
    others = {DATASETS[d][0] for d in DATASETS if MODALITY[d] == MODALITY[name]} - {DATASETS[name][0]}
    encoders = {}
    for kind in kinds:
        parts = [(manifest, scans)]
        if kind == "pooled":
            if not others:
                console.print(f"{name}: no other {MODALITY[name]} site in ../shared/data, so no pooled encoder")
                continue
            parts += [(dataset(other, work / other, console)[0], None) for other in sorted(others)]
        union, rows = union_manifest(work / name / f"ssl-{kind}.parquet", parts)
        epochs = max(1, round(config.pretrain.epochs * len(scans) / rows))
        overrides = {
            "manifest": union,
            "epochs": epochs,
            "out": work / name / "pretrain" / kind,
            "name": f"bench-{name}-{kind}",
            "register_encoder": False,
        }
        pretrain = config.pretrain.model_copy(update=overrides)
        encoders[kind] = str(run_pretrain(config.model_copy(update={"pretrain": pretrain}), console).encoder)
    return encoders


def epochs_for(budget: str, pool: int) -> int:
    parsed = Budget.parse(budget)
    labels = 2 * parsed.shots if parsed.shots is not None else pool * (parsed.fraction or 0)
    return int(min(30, max(3, math.ceil(4000 / max(labels, 1)))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="pneumoniamnist", choices=sorted(DATASETS))
    ap.add_argument(
        "--encoder",
        nargs="+",
        default=[],
        help="SSL encoders (encoder.pt or models:/ URI), each as NAME=REF to name its arms, or one bare REF",
    )
    ap.add_argument(
        "--pretrain",
        nargs="+",
        default=[],
        choices=("site", "pooled"),
        help="pretrain these SSL encoders first (site: this pool's training part; pooled: and the other sites "
        "of its modality) and add them to --encoder",
    )
    ap.add_argument("--budgets", default=",".join(BUDGETS))
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (YAML value) to check a variant, e.g. finetune.gentle_below=0; its cells "
        "get their own run folders, and it cannot be combined with --write-results",
    )
    ap.add_argument("--work", type=Path, default=HERE / "work" / "curves")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    if args.set and args.write_results:
        ap.error("--set checks a variant: the RESULTS.md tables are written without overrides")
    extra = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.set)}
    variant = "".join(f"-{k.rsplit('.', 1)[-1]}{v}" for k, v in extra.items()).replace(" ", "")
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(stderr=True)
    work = args.work / args.dataset
    manifest, labels = dataset(args.dataset, work, console)
    pool = len(labels.read_text().splitlines()) - 1
    encoders = dict(e.split("=", 1) if "=" in e else ("", e) for e in args.encoder)
    # The split every cell makes (run_finetune, same settings), made once here: pretraining stays on its
    # training part, and the targets block reads the make-up of its validation part.
    train, val = pool_parts(manifest, labels, load_config(DATASETS[args.dataset][2], extra), console)
    encoders |= pretrain_encoders(args.dataset, args.pretrain, manifest, train, args.work, console)
    if not encoders:
        ap.error("give an SSL encoder: --encoder REF or --pretrain site|pooled")
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
            "finetune.out": str(work / "runs" / f"{arm.replace(' ', '-')}-{budget}{variant}"),
            "finetune.epochs": epochs_for(budget, int(pool * 0.8)),
            "tracking.uri": f"sqlite:///{work}/mlflow.db",
            "finetune.name": f"bench-{args.dataset}",
            "finetune.register_detector": False,
            **extra,
        }
        row = cell(load_config(DATASETS[args.dataset][2], overrides), console)
        rows.append((arm, budget, *row))
        n, mean, sd, _, minutes, validation = row
        console.print(f"{arm} {budget}: {mean:.3f} ± {sd:.3f} ({n} labels, {minutes:.1f} min)")
    section = f"finetune-curves-{args.dataset}"
    ran = {row[0] for row in rows}
    # A variant's rows stand alone, beside the table, not merged into it.
    rows_kept = [] if variant else section_rows(RESULTS, section)
    earlier = [kept for line in rows_kept if (kept := earlier_row(line))[0] not in ran]
    rows = earlier + rows
    for arm, _, n, mean, sd, *_ in rows:
        series.setdefault(arm, []).append((n, mean, sd))
    # The committed figure changes with the committed table only; any other run draws beside its cells.
    figure = (HERE if args.write_results else work) / f"finetune-curves-{args.dataset}{variant}.png"
    label_efficiency_png(series, figure, f"{args.dataset}: validation AUROC vs labels ({args.seeds} seeds)")
    report = render(args, rows, validation, figure, encoders, bool(earlier))
    scans = {it["scan"]: it["label"] for it in val}  # one label per scan, as the AUROC counts them
    report += "\n\n" + targets(rows, sorted(Counter(scans.values()).values()))
    print(report)
    if args.write_results:
        write_section(RESULTS, section, report)


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


def earlier_row(line: str) -> tuple:
    """A row of this dataset's RESULTS.md table, parsed back: the arms a run leaves out keep their figures."""
    arm, budget, n, auroc, seeds, minutes = (cell.strip() for cell in line.strip().strip("|").split("|"))
    mean, sd = (float(v) for v in auroc.split("±"))
    return arm, budget, int(n), mean, sd, [float(v) for v in seeds.split(",")], float(minutes), None


def render(
    args: argparse.Namespace, rows: list, validation: int, figure: Path, encoders: dict[str, str], kept: bool
) -> str:
    named = ", ".join(
        f"{name or 'ssl'} `{Path(ref).relative_to(ROOT) if ref.startswith(str(ROOT)) else ref}`"
        for name, ref in encoders.items()
    )
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU. Dataset: "
        f"{args.dataset}; SSL encoders: {named}; {validation} validation "
        "scans (a stratified, "
        f"group-disjoint fifth of the labelled pool); {args.seeds} seeds per cell (label draw and "
        f"initialisation). Figure: `{figure.relative_to(ROOT)}`."
        + (f" Arms other than {args.arms} are kept from the previous run of this table." if kept else ""),
        "",
        "| arm | budget | labels used | AUROC mean ± sd | per seed | minutes |",
        "|---|---|---|---|---|---|",
    ]
    for arm, budget, n, mean, sd, per_seed, minutes, _ in rows:
        seeds = ", ".join(f"{a:.3f}" for a in per_seed)
        lines.append(f"| {arm} | {budget} | {n} | {mean:.3f} ± {sd:.3f} | {seeds} | {minutes:.1f} |")
    return "\n".join(lines)


def auroc_se(auroc: float, positives: int, negatives: int) -> float:
    """Hanley and McNeil's (1982) standard error of one AUROC on a validation set of that make-up: how far
    two arms' figures must differ before the validation part, not chance, tells them apart."""
    q1, q2 = auroc / (2 - auroc), 2 * auroc**2 / (1 + auroc)
    var = auroc * (1 - auroc) + (positives - 1) * (q1 - auroc**2) + (negatives - 1) * (q2 - auroc**2)
    return math.sqrt(var / (positives * negatives))


def targets(rows: list, classes: list[int]) -> str:
    """The issue's three targets, read off the table for each SSL arm against scratch-full: SSL with 1 % of
    the labels at least as good as scratch with 10 %; SSL with 10 % as scratch with 100 %; SSL ahead at
    every budget up to 10 %. Differences at one budget are per seed, where both arms drew the same labels."""
    cells = {(arm, budget): (mean, per_seed) for arm, budget, _, mean, _, per_seed, *_ in rows}
    scratch = {budget: cell for (arm, budget), cell in cells.items() if arm == "scratch-full"}
    small = [b for b in BUDGETS if b != "100%" and b in scratch]
    lines = [
        "Targets (SSL arm against scratch-full, means over seeds; the difference at each budget is SSL minus "
        "scratch, mean of the per-seed differences, as both arms drew the same labels with the same seed). "
        f"The validation part has {classes[0]} scans of one class and {classes[1]} of the other: one AUROC "
        f"near 0.6 on it has a standard error of {auroc_se(0.6, *classes):.3f}, near 0.9 of "
        f"{auroc_se(0.9, *classes):.3f}, near 0.98 of {auroc_se(0.98, *classes):.3f} (Hanley and McNeil).",
        "",
        "| SSL arm | 1 % vs scratch 10 % | 10 % vs scratch 100 % | SSL minus scratch, each budget up to 10 % "
        "| ahead at every budget ≤ 10 % |",
        "|---|---|---|---|---|",
    ]

    def versus(arm: str, budget: str, against: str) -> str:
        if (arm, budget) not in cells or against not in scratch:
            return "not run"
        ssl, base = cells[arm, budget][0], scratch[against][0]
        return f"{'met' if ssl >= base else 'not met'} ({ssl:.3f} vs {base:.3f})"

    for arm in dict.fromkeys(arm for arm, *_ in rows if arm != "scratch-full"):
        gaps = {b: float(np.mean(np.subtract(cells[arm, b][1], scratch[b][1]))) for b in small if (arm, b) in cells}
        ahead = "yes" if len(gaps) == len(small) and min(gaps.values()) > 0 else "no"
        lines.append(
            f"| {arm} | {versus(arm, '1%', '10%')} | {versus(arm, '10%', '100%')} "
            f"| {', '.join(f'{b} {g:+.3f}' for b, g in gaps.items())} | {ahead} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
