"""The shift report, the adaptations and the promotion gate from the command line, on the two chest X-ray sites.

What a hospital would type when a model trained on adult chest X-rays (cxr_nih1000) is to serve a
pediatric site (PneumoniaMNIST), every step through the ``medssl`` CLI against one MLflow store:

1. ``medssl shift`` adult -> pediatric (expected: shifted), and pediatric against itself (two random halves:
   expected not shifted);
2. ``medssl finetune``: a linear probe on 10 % of the adult labels from the adult MoCo encoder
   -> ``cxr-adult-detector`` v1 @challenger;
3. ``medssl promote --shift``: refused, v1 was never adapted to the pediatric site;
4. ``medssl adapt --method adabn`` and ``--method tent`` on the pediatric scans (no labels), and
   ``--method ssl`` (continued pretraining of the adult encoder on them) followed by the same
   ``medssl finetune`` on adult labels; after each, ``medssl promote --shift`` (the gate lets adapted
   challengers through, and the AUROC margin decides);
5. ``medssl evaluate`` of every version on the pediatric validation split (524 images, labels never used
   for training or adaptation).

The adult encoder is the one ``benchmarks/adapt_sites.py`` pretrained on the adult training part (run that
first). Settings: ``configs/bench-sites.yaml`` (28x28), continued SSL for ``--ssl-epochs``.

    .venv/bin/python benchmarks/adapt_cli.py --write-results
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from finetune_curves import SHARED, dataset  # noqa: E402
from medmnist import export  # noqa: E402
from results import RESULTS, write_section  # noqa: E402

MEDSSL = Path(sys.executable).with_name("medssl")
NAME = "cxr-adult"
DETECTOR = f"{NAME}-detector"


def medssl(*args: str | Path, env: dict[str, str]) -> None:
    """One CLI call, echoed; a failure stops the walkthrough with the command's own message."""
    command = [str(MEDSSL), *map(str, args)]
    print("$ medssl " + " ".join(map(str, args)), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, env=env, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ssl-epochs", type=int, default=20, help="continued SSL epochs on the pediatric scans")
    ap.add_argument("--work", type=Path, default=HERE / "work")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    console = Console(stderr=True)
    work = (args.work / "adapt-cli").resolve()
    encoder = (args.work / "adapt" / "adult-encoder" / "encoder.pt").resolve()
    if not encoder.is_file():
        sys.exit(f"{encoder} is missing: run benchmarks/adapt_sites.py first (it pretrains the adult encoder)")
    if work.exists():
        sys.exit(f"{work} exists: remove it to rerun the walkthrough from an empty MLflow store")
    work.mkdir(parents=True)
    adult, _ = dataset("cxr_nih1000", args.work / "curves" / "cxr_nih1000", console)
    pediatric, _ = dataset("pneumoniamnist", args.work / "curves" / "pneumoniamnist", console)
    val = export(SHARED / "pneumoniamnist" / "pneumoniamnist_trainval.npz", work / "png", {"val": None})["val"]
    settings = yaml.safe_load((ROOT / "configs" / "bench-sites.yaml").read_text())
    settings["pretrain"]["epochs"] = args.ssl_epochs
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
    c = ("--config", config)

    medssl(
        "shift", "--reference", adult, "--target", pediatric, "--encoder", encoder, "-o", work / "shift", *c, env=env
    )
    medssl(
        "shift",
        "--reference",
        pediatric,
        "--target",
        pediatric,
        "--encoder",
        encoder,
        "-o",
        work / "halves",
        *c,
        env=env,
    )
    finetune = ("finetune", "--manifest", adult, "--labels", SHARED / "cxr_nih1000" / "labels.csv", "--budget", "10%")
    finetune += ("--mode", "linear", "--seeds", "1", "--name", NAME, *c)
    promote = ("promote", "--name", DETECTOR, "--labels", val / "labels.csv", "--shift", work / "shift" / "shift.json")
    steps = []

    def gate(label: str) -> None:
        out = work / f"promote-{len(steps) + 1}"
        medssl(*promote, "-o", out, *c, env=env)
        steps.append((label, json.loads((out / "decision.json").read_text())))

    def adapt(model: str | Path, method: str) -> None:
        medssl(
            "adapt",
            "--model",
            model,
            "--target",
            pediatric,
            "--method",
            method,
            "--name",
            NAME,
            "-o",
            work / method,
            *c,
            env=env,
        )

    medssl(*finetune, "--encoder", encoder, "-o", work / "finetune", env=env)
    gate("v1: linear probe on the adult encoder, not adapted")
    adapt(f"models:/{DETECTOR}/1", "adabn")
    gate("v2: v1 + AdaBN on the pediatric scans")
    adapt(f"models:/{DETECTOR}/1", "tent")
    gate("v3: v1 + TENT on the pediatric scans")
    adapt(encoder, "ssl")
    medssl(*finetune, "--encoder", work / "ssl" / "encoder.pt", "-o", work / "finetune-ssl", env=env)
    gate("v4: linear probe (same adult labels) on the adult encoder after continued SSL on the pediatric scans")
    aurocs = {}
    for version in range(1, len(steps) + 1):
        out = work / f"evaluate-v{version}"
        medssl(
            "evaluate",
            "--model",
            f"models:/{DETECTOR}/{version}",
            "--labels",
            val / "labels.csv",
            "-o",
            out,
            *c,
            env=env,
        )
        aurocs[version] = json.loads((out / "metrics.json").read_text())
    report = render(work, steps, aurocs, args)
    print(report)
    if args.write_results:
        write_section(RESULTS, "adapt-cli", report)


def render(work: Path, steps: list, aurocs: dict, args: argparse.Namespace) -> str:
    shift = json.loads((work / "shift" / "shift.json").read_text())
    halves = json.loads((work / "halves" / "shift.json").read_text())
    lines = [
        f"Shift, adult -> pediatric: MMD p = {shift['mmd_p']:.3g}, domain AUROC {shift['domain_auroc']:.3f}, "
        f"{shift['ks_significant']} of {shift['ks_features']} features moved (KS, Bonferroni): "
        f"{'shifted' if shift['shifted'] else 'not shifted'}. Two random halves of the pediatric site: MMD p = "
        f"{halves['mmd_p']:.3g}, domain AUROC {halves['domain_auroc']:.3f}: "
        f"{'shifted' if halves['shifted'] else 'not shifted'}. Continued SSL: {args.ssl_epochs} epochs.",
        "",
        "| version | pediatric val AUROC [95 % CI] | promote --shift | reason |",
        "|---|---|---|---|",
    ]
    for version, (label, decision) in enumerate(steps, start=1):
        m = aurocs[version]["metrics"]["auroc"]
        verdict = "promoted to champion" if decision["promoted"] else "refused"
        cell = f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
        reason = decision["reason"].replace(f"{ROOT}/", "")
        lines.append(f"| {label} | {cell} | {verdict} | {reason} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
