"""Label efficiency: validation AUROC against the number of labels, SSL encoder against training from scratch.

For each budget (shots per class, or a share of each class) and each arm, ``run_finetune`` runs ``--seeds``
repeats: each draws its labels from the training part of a fixed, stratified, group-disjoint split of the
labelled pool and is scored on the validation part (never on a test split). Arms, for each SSL encoder
given (``--encoder NAME=PATH``, e.g. one pretrained on this site's images and one on every site's):

- ``ssl-linear``: logistic regression on the frozen SSL encoder;
- ``ssl-full``: the SSL encoder fine-tuned end to end from that probe;
- ``semi``: the SSL encoder fine-tuned on the labels and on the pool's unlabelled images (``--mode semi``);
- ``scratch-full``: the same network from random weights, trained end to end.

Each cell's AUROC comes with a 95 % bootstrap interval over its seeds and validation scans, and each SSL
cell with its paired difference to scratch at the same budget and its label-saving factor (how many labels
scratch needs to match it; ``label_saving.py``). A finished cell (arm, budget, settings) is kept in its run
folder and reused, so a stopped run goes on.

``--pretrain site pooled`` first pretrains the SSL encoders with the bench config's pretrain section (no
labels): ``site`` on the training part of this pool only, ``pooled`` on it and on every image of the other
sites of the same modality in ../shared/data (all chest X-rays), as a hospital would on its archive, for
as many images seen (epochs x images) as ``site``, so the two differ in data, not in compute. The
validation part is never pretrained on.

Full fine-tuning runs ``ceil(4000 / labels)`` epochs (3 to 30), so small budgets get enough steps and the
100 % budget stays affordable on a CPU. An epoch of the semi mode is a pass over the unlabelled pool; it
runs ``ceil(SEMI_IMAGES / unlabelled)`` of them (2 to 10): about the same number of unlabelled images on the
larger sets, and at most ten passes over the small ones (each semi step holds nine times a labelled batch).

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
from label_saving import Cell, measure, render  # noqa: E402
from medmnist import export  # noqa: E402
from results import RESULTS, SHARED, write_section  # noqa: E402

from pipeline.atomic import write_text  # noqa: E402
from pipeline.config import Config, FinetuneConfig, load_config  # noqa: E402
from pipeline.data.budget import Budget  # noqa: E402
from pipeline.data.labelled import labelled_items, validation_split  # noqa: E402
from pipeline.data.manifest import union_manifest  # noqa: E402
from pipeline.finetune import run_finetune  # noqa: E402
from pipeline.ingest import run_ingest  # noqa: E402
from pipeline.pretrain import run_pretrain  # noqa: E402
from pipeline.report import label_efficiency_png  # noqa: E402

CONFIG = ROOT / "configs" / "bench-pneumoniamnist.yaml"
BUDGETS = ("4shot", "16shot", "1%", "10%", "100%")
ARMS = {
    "ssl-linear": ("ssl", "linear"),
    "ssl-full": ("ssl", "full"),
    "semi": ("ssl", "semi"),
    "scratch-full": ("scratch", "full"),
}
SEMI_IMAGES = 20_000


# name -> (folder under ../shared/data, label column, bench config)
DATASETS = {
    "pneumoniamnist": ("pneumoniamnist", "label", CONFIG),
    "cxr_nih1000": ("cxr_nih1000", "label", ROOT / "configs" / "bench-64.yaml"),
    "busi": ("busi", "label", ROOT / "configs" / "bench-64.yaml"),
    "busi-malignant": ("busi", "malignant", ROOT / "configs" / "bench-64.yaml"),
    "brain-mr": ("brain_tumor_mri_nickparvar", "label", ROOT / "configs" / "bench-mr.yaml"),
}
MODALITY = {"pneumoniamnist": "CXR", "cxr_nih1000": "CXR", "busi": "US", "busi-malignant": "US", "brain-mr": "MR"}


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


def epochs_for(mode: str, budget: str, pool: int) -> int:
    """Fine-tuning epochs of a cell (see the docstring); ``pool`` is the training part's size."""
    if mode == "semi":
        return int(min(10, max(2, math.ceil(SEMI_IMAGES / pool))))
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
    ap.add_argument(
        "--finished-only",
        action="store_true",
        help="tabulate the cells already finished and run none (a stopped run's partial table)",
    )
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
    encoders = dict(e.split("=", 1) if "=" in e else ("", e) for e in args.encoder)
    # The split every cell makes (run_finetune, same settings), made once here: pretraining stays on its
    # training part, and the targets block reads the make-up of its validation part.
    train, val = pool_parts(manifest, labels, load_config(DATASETS[args.dataset][2], extra), console)
    encoders |= pretrain_encoders(args.dataset, args.pretrain, manifest, train, args.work, console)
    if not encoders:
        ap.error("give an SSL encoder: --encoder REF or --pretrain site|pooled")
    measured = []
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
            "finetune.epochs": epochs_for(mode, budget, len(train)),
            "tracking.uri": f"sqlite:///{work}/mlflow.db",
            "finetune.name": f"bench-{args.dataset}",
            "finetune.register_detector": False,
            **extra,
        }
        found = cell(arm, budget, load_config(DATASETS[args.dataset][2], overrides), console, args.finished_only)
        if found is None:
            console.print(f"{arm} {budget}: not finished, left out")
            continue
        measured.append(found)
        console.print(f"{arm} {budget}: {found.labels} labels, {found.minutes:.1f} min")
    table = measure(measured)
    series: dict[str, list] = {}
    for m in table:
        series.setdefault(m.cell.arm, []).append((m.cell.labels, m.auroc, m.low, m.high))
    # The committed figure changes with the committed table only; any other run draws beside its cells.
    figure = (HERE if args.write_results else work) / f"finetune-curves-{args.dataset}{variant}.png"
    label_efficiency_png(series, figure, f"{args.dataset}: validation AUROC vs labels ({args.seeds} seeds)")
    classes = sorted(Counter({it["scan"]: it["label"] for it in val}.values()).values())
    report = header(args, len({it["scan"] for it in val}), classes, figure, encoders) + "\n\n" + render(table)
    write_text(work / f"measured{variant}.json", json.dumps([m.record() for m in table]))
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


def cell(arm: str, budget: str, config: Config, console: Console, finished_only: bool = False) -> Cell | None:
    """One cell, its validation scores read back from its run folder when a finished cell there has the
    same settings (and the same encoder file), run otherwise (None instead with ``finished_only``)."""
    done = config.finetune.out / "cell.json"
    settings = config.finetune.model_dump(mode="json")
    if Path(config.finetune.encoder).is_file():  # a retrained encoder at the same path is another cell
        settings["encoder_sha256"] = hashlib.sha256(Path(config.finetune.encoder).read_bytes()).hexdigest()
    if not (done.is_file() and _settings(saved := json.loads(done.read_text())) == settings):
        if finished_only:
            return None
        began = time.perf_counter()
        result = run_finetune(config, console)
        saved = {
            "settings": settings,
            "labels": int(np.mean(result.labels_used)),
            "minutes": (time.perf_counter() - began) / 60,
            "scores": str(result.scores),
        }
        write_text(done, json.dumps(saved))
    return Cell(arm, budget, saved["labels"], pd.read_csv(saved["scores"]), saved["minutes"])


def _settings(saved: dict) -> dict:
    """A finished cell's settings as today's config reads them: a key added to the config since then takes
    its default, which is what that cell ran with."""
    settings = dict(saved["settings"])
    sha = settings.pop("encoder_sha256", None)
    settings = FinetuneConfig.model_validate(settings).model_dump(mode="json")
    return settings | ({"encoder_sha256": sha} if sha else {})


def header(args: argparse.Namespace, scans: int, classes: list[int], figure: Path, encoders: dict[str, str]) -> str:
    named = ", ".join(
        f"{name or 'ssl'} `{Path(ref).relative_to(ROOT) if ref.startswith(str(ROOT)) else ref}`"
        for name, ref in encoders.items()
    )
    return (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU. Dataset: "
        f"{args.dataset}; SSL encoders: {named}; {scans} validation scans ({classes[0]} of one class, "
        f"{classes[1]} of the other: a stratified, group-disjoint fifth of the labelled pool); {args.seeds} "
        "seeds per cell (label draw and initialisation). Intervals: percentile bootstrap over seeds and "
        f"validation scans, paired between an arm and scratch. Figure: `{figure.relative_to(ROOT)}`."
    )


if __name__ == "__main__":
    main()
