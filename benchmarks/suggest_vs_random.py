"""Do the scans ``medssl suggest`` picks teach a detector more than as many random ones?

On the fixed split of the labelled pool (as ``finetune`` makes it), each seed starts from ``--start``
random labelled scans per class of the training part, then adds ``--add`` more by each strategy, fits the
linear probe on the frozen SSL encoder, and scores the validation part:

- ``random``: uniformly from the unlabelled training scans;
- ``k-centre``: ``pipeline.suggest.run.select`` (farthest from the labelled ones in the embedding space);
- ``k-centre + doubt``: the same, among the scans the starting probe is least sure about.

    .venv/bin/python benchmarks/suggest_vs_random.py \\
        --encoder benchmarks/work/pneumoniamnist/pretrain/moco-epochs80/encoder.pt --write-results
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from finetune_curves import DATASETS, dataset  # noqa: E402
from results import RESULTS, write_section  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.data.labelled import labelled_items, validation_split  # noqa: E402
from pipeline.data.transforms import load_fixed  # noqa: E402
from pipeline.finetune.fit import fit_linear  # noqa: E402
from pipeline.inference import load_encoder, scan_auroc, scan_embeddings, score  # noqa: E402
from pipeline.suggest.run import select  # noqa: E402

STRATEGIES = ("random", "k-centre", "k-centre + doubt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="pneumoniamnist", choices=sorted(DATASETS))
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--start", type=int, default=2, help="random labelled scans per class to start from")
    ap.add_argument("--add", type=int, default=20, help="scans each strategy adds")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--work", type=Path, default=HERE / "work" / "curves")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    console = Console(stderr=True)
    manifest, labels = dataset(args.dataset, args.work / args.dataset, console)
    config = load_config(DATASETS[args.dataset][2], {"finetune.encoder": args.encoder, "tracking.enabled": False})
    encoder, spec = load_encoder(config.finetune.encoder, config.pretrain, config.tracking, 0)
    device = torch.device("cpu")
    train, val = validation_split(labelled_items(manifest, labels, None, spec.spatial_dims, 0, console), 0.2, 0)
    first = {it["scan"]: it for it in train}
    embeddings = scan_embeddings(encoder, list(first.values()), spec, device)
    val_images = load_fixed(val, spec.spatial_dims, spec.size, spec.volume_side)

    def auroc(scans: list[str], seed: int) -> tuple[float, torch.nn.Module]:
        chosen = [first[s] for s in scans]
        images = load_fixed(chosen, spec.spatial_dims, spec.size, spec.volume_side)
        probe = fit_linear(
            encoder, embeddings.shape[1], images, np.array([it["label"] for it in chosen]), 1.0, seed, device
        )
        return scan_auroc(val, score(probe, val_images, device)), probe

    results: dict[str, list[float]] = {s: [] for s in STRATEGIES}
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        start = [
            s
            for c in (0, 1)
            for s in rng.choice(sorted(k for k in first if first[k]["label"] == c), args.start, replace=False)
        ]
        _, probe = auroc(start, seed)
        pool = [s for s in first if s not in start]
        doubt = dict(
            zip(
                pool,
                np.abs(
                    score(
                        probe,
                        load_fixed([first[s] for s in pool], spec.spatial_dims, spec.size, spec.volume_side),
                        device,
                    )
                ),
                strict=True,
            )
        )
        picks = {
            "random": list(rng.choice(pool, args.add, replace=False)),
            "k-centre": select(embeddings, set(start), args.add),
            "k-centre + doubt": select(embeddings, set(start), args.add, doubt),
        }
        for strategy, added in picks.items():
            chosen = start + added
            if {first[s]["label"] for s in chosen} != {0, 1}:
                results[strategy].append(float("nan"))  # one class only: no probe can be fitted
                continue
            results[strategy].append(auroc(chosen, seed)[0])
        console.print({k: round(v[-1], 3) for k, v in results.items()})
    report = render(args, len(val), results)
    print(report)
    if args.write_results:
        write_section(RESULTS, f"suggest-{args.dataset}", report)


def render(args: argparse.Namespace, validation: int, results: dict[str, list[float]]) -> str:
    base = np.array(results["random"])
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU. Dataset: "
        f"{args.dataset}; encoder `{args.encoder}` (linear probe); start: {args.start} random scans per class; "
        f"+{args.add} scans per strategy; {args.seeds} seeds; {validation} validation items.",
        "",
        "| strategy | labels | AUROC mean ± sd | wins over random (same seed) | one-class draws |",
        "|---|---|---|---|---|",
    ]
    for strategy, values in results.items():
        v = np.array(values)
        ok = ~np.isnan(v)
        wins = "-" if strategy == "random" else f"{int(np.sum(v[ok & ~np.isnan(base)] > base[ok & ~np.isnan(base)]))}"
        lines.append(
            f"| {strategy} | {2 * args.start + args.add} | {np.nanmean(v):.3f} ± {np.nanstd(v):.3f} | {wins} "
            f"| {int((~ok).sum())} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
