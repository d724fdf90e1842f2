"""Which view recipe suits which modality: MoCo pretrained with each candidate recipe, judged on the set's
validation part.

For a set (its pool split once into a training part and a stratified, group-disjoint validation fifth, as
``finetune_curves.py`` splits it), each recipe pretrains MoCo encoders on the training part without labels
(``configs/bench-64.yaml``, the same epochs for every recipe), one per ``--seeds`` (MoCo on a few hundred
images lands far apart from one seed to the next, so one run per recipe cannot rank recipes), then is judged
by what the labels see of it on the validation part: the kNN AUROC (bank: the training part with its labels)
and linear probes on 16 labels per class (3 seeds) and on every training label. Candidates: the recipe tuned
on PneumoniaMNIST (``bench``), the config's default (``default``), and the modality presets of
``pipeline/data/presets.py``.

    .venv/bin/python benchmarks/view_presets.py --dataset busi --write-results
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
from rich.console import Console

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from finetune_curves import DATASETS, MODALITY, dataset, pool_parts  # noqa: E402
from results import RESULTS, write_section  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.data.manifest import union_manifest  # noqa: E402
from pipeline.data.presets import VIEW_PRESETS  # noqa: E402
from pipeline.finetune import run_finetune  # noqa: E402
from pipeline.pretrain import run_pretrain  # noqa: E402
from pipeline.pretrain.monitor import KnnMonitor  # noqa: E402

RECIPES = VIEW_PRESETS | {
    "bench": {"crop_min": 0.8, "flip_axes": [0], "intensity": 0.3},
    "default": {"crop_min": 0.5, "flip_axes": [0], "intensity": 1.0},
}
IMAGES_SEEN = 30_000  # epochs x training images of every recipe's pretraining, so sets of any size cost alike


def _judge(
    name: str,
    seed: int,
    bench: Path,
    union: Path,
    manifest: Path,
    labels: Path,
    epochs: int,
    monitor: KnnMonitor,
    work: Path,
    console: Console,
) -> tuple[float, float, float]:
    """(kNN AUROC, linear probe at 16 shots, linear probe on every label) of one recipe pretrained with one
    seed; a finished pretraining or probe is found again in its folder."""
    where = work / "views" / f"{name}-seed{seed}"
    overrides = {
        "tracking.enabled": False,
        "pretrain.manifest": str(union),
        "pretrain.views": RECIPES[name],
        "pretrain.epochs": epochs,
        "pretrain.seed": seed,
        "pretrain.monitor.every": 0,
        "pretrain.register_encoder": False,
        "pretrain.out": str(where),
    }
    pretrained = run_pretrain(load_config(bench, overrides), console)
    encoder = torch.load(pretrained.encoder, map_location="cpu", weights_only=False)
    knn = monitor(encoder, torch.device("cpu"))
    probes = []
    for budget, repeats in (("16shot", 3), ("100%", 1)):
        cell = {
            "tracking.enabled": False,
            "finetune.encoder": str(pretrained.encoder),
            "finetune.mode": "linear",
            "finetune.budget": budget,
            "finetune.seeds": repeats,
            "finetune.manifest": str(manifest),
            "finetune.labels": str(labels),
            "finetune.register_detector": False,
            "finetune.out": str(where / f"linear-{budget.replace('%', 'pct')}"),
        }
        probes.append(run_finetune(load_config(bench, cell), console).mean)
    return float(knn), float(probes[0]), float(probes[1])


def _spread(values: np.ndarray) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="busi", choices=sorted(DATASETS))
    ap.add_argument(
        "--recipes",
        help=f"comma-separated, of {', '.join(RECIPES)} (default: bench, default and the set's modality preset)",
    )
    ap.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="pretraining seeds per recipe: two MoCo runs of one recipe can land further apart than two recipes",
    )
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "curves")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(stderr=True)
    recipes = args.recipes or f"bench,default,{MODALITY[args.dataset].lower()}"
    work = args.work / args.dataset
    manifest, labels = dataset(args.dataset, work, console)
    bench = DATASETS[args.dataset][2]
    config = load_config(bench, {"tracking.enabled": False})
    train, val = pool_parts(manifest, labels, config, console)
    epochs = int(min(60, max(5, round(IMAGES_SEEN / len(train)))))
    union, _ = union_manifest(work / "ssl-site.parquet", [(manifest, {it["scan"] for it in train})])
    monitor = KnnMonitor(train, val, config.pretrain, k=20)
    seeds = list(range(args.seeds))
    rows = []
    for name in recipes.split(","):
        began = time.perf_counter()
        runs = [_judge(name, seed, bench, union, manifest, labels, epochs, monitor, work, console) for seed in seeds]
        minutes = (time.perf_counter() - began) / 60
        knn, few, every = (np.array(figures) for figures in zip(*runs, strict=True))
        recipe = RECIPES[name]
        rows.append(
            f"| {args.dataset} | {name} | {recipe['crop_min']} | {recipe['flip_axes']} | {recipe['intensity']} "
            f"| {_spread(knn)} | {_spread(few)} | {_spread(every)} | {minutes:.1f} |"
        )
        console.print(rows[-1])
    report = "\n".join(
        [
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU. {args.dataset}: "
            f"MoCo ({bench.name}) on the {len(train)} training images for {epochs} epochs per recipe and pretraining "
            f"seed ({len(seeds)} seeds: {', '.join(map(str, seeds))}); {len({it['scan'] for it in val})} validation "
            "scans. Each figure: mean ± sd over the pretraining seeds (16 shots: each seed's mean of 3 label draws).",
            "",
            "| set | recipe | crop_min | flip axes | intensity | kNN AUROC | linear, 16 shots | linear, all labels "
            "| minutes |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    print(report)
    if args.write_results:
        write_section(RESULTS, f"view-presets-{args.dataset}", report)


if __name__ == "__main__":
    main()
