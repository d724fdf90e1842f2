"""Cross-site AUROC of a few-label detector, before and after adapting to the new site without its labels.

The two chest X-ray sites of ../shared/data: adult (cxr_nih1000) and pediatric (PneumoniaMNIST train
images), at the common size 28 (``configs/bench-sites.yaml``). For each direction (source -> target):

- each site's SSL encoder is MoCo pretrained on that site's training part alone (no labels);
- every seed draws ``--budget`` labels from the source's training part and fits a linear probe on the
  source encoder (``pipeline.finetune``); it is scored on the source's validation part (in-site) and on the
  target's validation part (cross-site);
- the same detector adapted with AdaBN and with TENT on the target's training part (unlabelled), and a
  probe fitted on the same source labels from the source encoder after continued SSL on the target's
  training part (``medssl adapt --method ssl``), are scored on the target's validation part;
- the target's own in-site figure (its encoder, as many of its own labels, its validation part) is the
  ceiling: an adaptation's share of the gap is (adapted - cross-site) / (target in-site - cross-site);
- a diagnostic, not an adaptation: a probe on the source encoder fitted on the target's own labels. Where
  it comes near the ceiling the source features already serve the target, and what remains of the gap is
  the labels' meaning (the sites' tasks differ), which no label-free adaptation can close.

Validation parts only (the fixed, group-disjoint fifth of each pool); the test splits stay unused.

    .venv/bin/python benchmarks/adapt_sites.py --budget 10%,100% --write-results
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from finetune_curves import dataset  # noqa: E402
from results import RESULTS, write_section  # noqa: E402

from pipeline.adapt.run import adabn, run_adapt, tent  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402
from pipeline.data.budget import Budget, draw  # noqa: E402
from pipeline.data.labelled import labelled_items, validation_split  # noqa: E402
from pipeline.data.manifest import union_manifest  # noqa: E402
from pipeline.data.transforms import load_fixed  # noqa: E402
from pipeline.finetune.fit import fit_linear  # noqa: E402
from pipeline.inference import scan_auroc, score  # noqa: E402
from pipeline.pretrain import run_pretrain  # noqa: E402

CONFIG = ROOT / "configs" / "bench-sites.yaml"
SITES = {"adult": "cxr_nih1000", "pediatric": "pneumoniamnist"}
ARMS = (
    "source in-site",
    "cross-site",
    "AdaBN",
    "TENT",
    "continued SSL",
    "target in-site",
    "source encoder, target labels",
)


class Site:
    """One site's labelled pool, its fixed split, its images at the common size, and its SSL encoder."""

    def __init__(self, name: str, manifest: Path, labels: Path, config: Config, out: Path, console: Console) -> None:
        self.name, self.manifest = name, manifest
        size = config.pretrain.size
        items = labelled_items(manifest, labels, config.ingest.secret(), 2, 0, console)
        self.train, self.val = validation_split(items, 0.2, 0)
        self.position = {id(it): i for i, it in enumerate(self.train)}
        self.train_images = load_fixed(self.train, 2, size)
        self.val_images = load_fixed(self.val, 2, size)
        # The manifest rows of the training part only: what SSL, here and in continued SSL, may see of this site.
        scans = {it["scan"] for it in self.train}
        self.train_manifest, _ = union_manifest(manifest.with_name("manifest-train.parquet"), [(manifest, scans)])
        overrides = {"manifest": self.train_manifest, "out": out / f"{name}-encoder", "register_encoder": False}
        pretrain = config.pretrain.model_copy(update=overrides)
        self.encoder_path = run_pretrain(config.model_copy(update={"pretrain": pretrain}), console).encoder
        self.encoder = torch.load(self.encoder_path, map_location="cpu", weights_only=False)


def probe(encoder: torch.nn.Module, site: Site, chosen: list[dict], seed: int) -> torch.nn.Module:
    index = torch.as_tensor([site.position[id(it)] for it in chosen])
    labels = np.array([it["label"] for it in chosen])
    with torch.no_grad():
        dim = int(encoder.eval()(site.train_images[:1]).shape[1])
    return fit_linear(copy.deepcopy(encoder), dim, site.train_images[index], labels, 1.0, seed, torch.device("cpu"))


def auroc(detector: torch.nn.Module, site: Site) -> float:
    return scan_auroc(site.val, score(detector, site.val_images, torch.device("cpu")))


def direction(
    source: Site, target: Site, args: argparse.Namespace, config: Config, out: Path, console: Console
) -> dict[str, dict[str, list[float]]]:
    """Every arm's AUROC per seed for source -> target, per label budget; continued SSL writes under ``out``."""
    continued = continued_ssl(source, target, args.ssl_epochs, config, out, console)
    adapted_encoder = torch.load(continued, map_location="cpu", weights_only=False)
    return {budget: arms(source, target, budget, adapted_encoder, args, config, console) for budget in args.budget}


class Pretrained(Protocol):
    """A site (or a view) as continued SSL needs it: its name, SSL encoder and training-part manifest."""

    name: str
    encoder_path: Path
    train_manifest: Path


def continued_ssl(
    source: Pretrained, target: Pretrained, epochs: int, config: Config, out: Path, console: Console
) -> Path:
    """The source encoder after ``epochs`` more of SSL on the target's training part (``medssl adapt
    --method ssl``)."""
    ssl = config.adapt.model_copy(
        update={
            "model": str(source.encoder_path),
            "target": str(target.train_manifest),
            "method": "ssl",
            "out": out / f"{source.name}-to-{target.name}-ssl",
            "register_model": False,
        }
    )
    pretrain = config.pretrain.model_copy(update={"epochs": epochs})
    return run_adapt(config.model_copy(update={"adapt": ssl, "pretrain": pretrain}), console).model


def arms(
    source: Site,
    target: Site,
    spec: str,
    adapted_encoder: torch.nn.Module,
    args: argparse.Namespace,
    config: Config,
    console: Console,
) -> dict[str, list[float]]:
    """Every arm's AUROC per seed for source -> target with ``spec`` labels."""
    budget = Budget.parse(spec)
    device = torch.device("cpu")
    results: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for seed in range(args.seeds):
        chosen = draw(source.train, budget, seed)
        detector = probe(source.encoder, source, chosen, seed)
        results["source in-site"].append(auroc(detector, source))
        results["cross-site"].append(auroc(detector, target))
        results["AdaBN"].append(auroc(adabn(detector, target.train_images, config.adapt.batch_size, device), target))
        tented = tent(detector, target.train_images, config.adapt.batch_size, args.tent_lr, 1, seed, device)
        results["TENT"].append(auroc(tented, target))
        results["continued SSL"].append(auroc(probe(adapted_encoder, source, chosen, seed), target))
        target_chosen = draw(target.train, budget, seed)
        results["target in-site"].append(auroc(probe(target.encoder, target, target_chosen, seed), target))
        results["source encoder, target labels"].append(
            auroc(probe(source.encoder, target, target_chosen, seed), target)
        )
        console.print(
            f"{source.name} -> {target.name} {spec} seed {seed}: "
            + ", ".join(f"{k} {v[-1]:.3f}" for k, v in results.items())
        )
    return results


def render(header: str, table: dict[tuple[str, str, str], dict]) -> str:
    """The header, then one row per (source, target, budget): every arm's mean ± sd and the shares of the gap."""
    lines = [
        header,
        "",
        "| source -> target | labels | " + " | ".join(ARMS) + " | gap recovered: AdaBN / TENT / continued SSL |",
        "|---|---|" + "---|" * (len(ARMS) + 1),
    ]
    for (source, target, budget), results in table.items():
        mean = {arm: float(np.mean(v)) for arm, v in results.items()}
        cells = [f"{mean[arm]:.3f} ± {np.std(results[arm], ddof=1):.3f}" for arm in ARMS]
        gap = mean["target in-site"] - mean["cross-site"]
        shares = " / ".join(
            f"{(mean[arm] - mean['cross-site']) / gap:+.0%}" if gap > 0 else "-"
            for arm in ("AdaBN", "TENT", "continued SSL")
        )
        lines.append(f"| {source} -> {target} | {budget} | " + " | ".join(cells) + f" | {shares} |")
    return "\n".join(lines)


def probes(args: argparse.Namespace) -> str:
    """The table header's sentence on the probes and the adaptations."""
    return (
        f"linear probe on {' or '.join(args.budget)} of the source's labels (the target in-site probe and the "
        f"diagnostic: as many of the target's own); {args.seeds} seeds; TENT lr {args.tent_lr}, one pass; "
        f"continued SSL {args.ssl_epochs} epochs on the target's training part."
    )


def options(description: str) -> argparse.ArgumentParser:
    """The options both site benchmarks share."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--budget",
        default=["10%"],
        type=lambda text: text.split(","),
        help="labels of each site: N%% or Nshot, comma-separated for several",
    )
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ssl-epochs", type=int, default=20, help="continued SSL epochs on the target")
    ap.add_argument("--tent-lr", type=float, default=1e-3)
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--write-results", action="store_true")
    return ap


def start(args: argparse.Namespace, folder: str) -> tuple[Console, Path, Config]:
    """(console, work folder, bench config with its own MLflow store) of one site benchmark."""
    out = args.work / folder
    out.mkdir(parents=True, exist_ok=True)
    return Console(stderr=True), out, load_config(CONFIG, {"tracking.uri": f"sqlite:///{out}/mlflow.db"})


def both_ways(
    a: Site, b: Site, args: argparse.Namespace, config: Config, out: Path, console: Console
) -> dict[tuple[str, str, str], dict[str, list[float]]]:
    """Every arm's AUROC per seed, per (source, target, budget), a -> b then b -> a."""
    return {
        (source.name, target.name, budget): results
        for source, target in ((a, b), (b, a))
        for budget, results in direction(source, target, args, config, out, console).items()
    }


def publish(header: str, table: dict[tuple[str, str, str], dict], args: argparse.Namespace, section: str) -> None:
    """Print the table and, with ``--write-results``, write it into its section of RESULTS.md."""
    report = render(header, table)
    print(report)
    if args.write_results:
        write_section(RESULTS, section, report)


def main() -> None:
    args = options(__doc__).parse_args()
    console, out, config = start(args, "adapt")
    a, p = (
        Site(name, *dataset(folder, args.work / "curves" / folder, console), config, out, console)
        for name, folder in SITES.items()
    )
    header = (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU. Common size "
        f"{config.pretrain.size}x{config.pretrain.size}; encoders: MoCo on each site's training part ({a.name}: "
        f"{len(a.train)} of {len(a.train) + len(a.val)} scans, {p.name}: {len(p.train)} of "
        f"{len(p.train) + len(p.val)}); {probes(args)} Validation parts: {len(a.val)} adult, {len(p.val)} "
        "pediatric scans."
    )
    publish(header, both_ways(a, p, args, config, out, console), args, "adapt-sites")


if __name__ == "__main__":
    main()
