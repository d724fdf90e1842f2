"""PA against AP chest films: how much a detector loses on the other view, and what adaptation wins back.

cxr_nih1000 holds posteroanterior (PA, standing, in the department) and anteroposterior (AP, mostly portable,
at the bedside) films of one task, normal vs any finding (``view_position`` in its labels.csv). The same
labels, another acquisition: the heart looks larger on AP, the scapulae overlap the lungs, the exposure and
the patients (sicker, supine) differ. Each view is a site here; each is split once into a training part
and a stratified, patient-disjoint validation fifth. For each direction (source -> target) and seed:

- the SSL encoder is MoCo pretrained on the source view's training part alone (the target unseen);
- ``scratch-full``, ``ssl-full`` and ``semi`` (FixMatch; its unlabelled images: the source training part)
  are fitted on ``--budget`` of the source's training labels and scored on the source's validation part
  (in-view) and the target's (cross-view); the drop is in-view minus cross-view;
- the ssl-full detector adapted with AdaBN and with TENT on the target's training part (no labels), and an
  ssl-full detector fitted on the same source labels from the encoder after continued SSL on the target's
  training part, are scored on the target's validation part; the share of the gap each recovers is
  (adapted - cross-view) / (ssl-full in-view - cross-view).

Then ``medssl shift``'s test on the PA encoder's embeddings: PA against AP must be flagged, two halves of PA
must not.

    .venv/bin/python benchmarks/adapt_views.py --write-results
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from adapt_sites import continued_ssl  # noqa: E402
from finetune_curves import epochs_for  # noqa: E402
from results import RESULTS, SHARED, write_section  # noqa: E402

from pipeline.adapt import run_shift  # noqa: E402
from pipeline.adapt.run import adabn, tent  # noqa: E402
from pipeline.config import Config, load_config  # noqa: E402
from pipeline.data.budget import Budget, draw  # noqa: E402
from pipeline.data.labelled import labelled_items, validation_split  # noqa: E402
from pipeline.data.manifest import union_manifest  # noqa: E402
from pipeline.finetune.run import fit_detector  # noqa: E402
from pipeline.inference import InputSpec, load_encoder, scan_auroc, score  # noqa: E402
from pipeline.ingest import run_ingest  # noqa: E402
from pipeline.pretrain import run_pretrain  # noqa: E402

CONFIG = ROOT / "configs" / "bench-64.yaml"
ARMS = ("scratch-full", "ssl-full", "semi")
ADAPTED = ("AdaBN", "TENT", "continued SSL")
CPU = torch.device("cpu")


class View:
    """One view's labels, its fixed split, its images and its SSL encoder."""

    def __init__(self, name: str, manifest: Path, labels: Path, config: Config, out: Path, console: Console):
        self.name = name
        found = labelled_items(manifest, labels, config.ingest.secret(), 2, 0, console)
        self.train, self.val = validation_split(found, 0.2, 0)
        self.position = {id(it): i for i, it in enumerate(self.train)}
        spec = InputSpec(2, config.pretrain.size, config.pretrain.volume_side)
        self.train_images, self.val_images = spec.load(self.train), spec.load(self.val)
        scans = {it["scan"] for it in self.train}
        self.train_manifest, _ = union_manifest(out / f"{name}-train.parquet", [(manifest, scans)])
        pretrain = config.pretrain.model_copy(
            update={"manifest": self.train_manifest, "out": out / f"{name}-encoder", "register_encoder": False}
        )
        self.encoder_path = run_pretrain(config.model_copy(update={"pretrain": pretrain}), console).encoder

    def auroc(self, detector: torch.nn.Module) -> float:
        return scan_auroc(self.val, score(detector, self.val_images, CPU))


def ingest_views(work: Path, console: Console) -> tuple[Path, dict[str, Path]]:
    """(manifest whose ``site`` is PA or AP, a label CSV per view) of cxr_nih1000."""
    source = SHARED / "cxr_nih1000"
    table = pd.read_csv(source / "labels.csv")
    table = table.assign(path=[str(source / f) for f in table.file], site=table.view_position)
    columns = ["path", "label", "patient_id", "site"]
    work.mkdir(parents=True, exist_ok=True)
    table[columns].to_csv(work / "labels.csv", index=False)
    per_view = {}
    for view, rows in table.groupby("site"):
        per_view[str(view)] = work / f"labels-{view}.csv"
        rows[columns].to_csv(per_view[str(view)], index=False)
    overrides = {
        "ingest.sources": [str(source)],
        "ingest.out": str(work / "pool"),
        "ingest.labels": [str(work / "labels.csv")],
        "tracking.enabled": False,
    }
    return run_ingest(load_config(CONFIG, overrides), console).manifest, per_view


def fitted(arm: str, encoder: Path, view: View, chosen: list[dict], budget: str, seed: int, config: Config):
    """The detector of one arm on ``chosen`` source labels, fitted as the finetune stage fits it."""
    mode = "semi" if arm == "semi" else "full"
    ref = "scratch" if arm == "scratch-full" else str(encoder)
    epochs = epochs_for(mode, budget, len(view.train))
    cfg = config.finetune.model_copy(update={"mode": mode, "encoder": ref, "epochs": epochs})
    start = load_encoder(ref, config.pretrain, config.tracking, seed)[0]
    index = torch.as_tensor([view.position[id(it)] for it in chosen])
    labels = np.array([it["label"] for it in chosen])
    unlabelled = view.train_images if mode == "semi" else None
    spec = InputSpec(2, config.pretrain.size, config.pretrain.volume_side)
    return fit_detector(start, view.train_images[index], labels, cfg, spec, seed, CPU, unlabelled)[0]


def direction(source: View, target: View, args: argparse.Namespace, config: Config, out: Path, console: Console):
    """{row: per-seed AUROCs} of source -> target: each arm in-view and cross-view, and the adaptations."""
    continued = continued_ssl(source, target, args.ssl_epochs, config, out, console)
    rows: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        chosen = draw(source.train, Budget.parse(args.budget), seed)
        for arm in ARMS:
            detector = fitted(arm, source.encoder_path, source, chosen, args.budget, seed, config)
            rows.setdefault(f"{arm} in-view", []).append(source.auroc(detector))
            rows.setdefault(f"{arm} cross-view", []).append(target.auroc(detector))
            if arm == "ssl-full":
                batch = config.adapt.batch_size
                rows.setdefault("AdaBN", []).append(target.auroc(adabn(detector, target.train_images, batch, CPU)))
                tented = tent(detector, target.train_images, batch, args.tent_lr, 1, seed, CPU)
                rows.setdefault("TENT", []).append(target.auroc(tented))
        again = fitted("ssl-full", continued, source, chosen, args.budget, seed, config)
        rows.setdefault("continued SSL", []).append(target.auroc(again))
        console.print(
            f"{source.name} -> {target.name} seed {seed}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in rows.items())
        )
    return rows


def render(header: str, table: dict[str, dict[str, list[float]]]) -> str:
    mean = {d: {k: float(np.mean(v)) for k, v in rows.items()} for d, rows in table.items()}
    lines = [
        header,
        "",
        "| source -> target | arm | in-view | cross-view | drop |",
        "|---|---|---|---|---|",
    ]
    for d, rows in table.items():
        for arm in ARMS:
            a, b = rows[f"{arm} in-view"], rows[f"{arm} cross-view"]
            lines.append(
                f"| {d} | {arm} | {np.mean(a):.3f} ± {np.std(a, ddof=1):.3f} | {np.mean(b):.3f} ± "
                f"{np.std(b, ddof=1):.3f} | {np.mean(a) - np.mean(b):+.3f} |"
            )
    lines += [
        "",
        "| source -> target | ssl-full cross-view | " + " | ".join(ADAPTED) + " | gap recovered |",
        "|---|---|---|---|---|---|",
    ]
    for d, rows in table.items():
        m = mean[d]
        gap = m["ssl-full in-view"] - m["ssl-full cross-view"]
        shares = " / ".join(f"{(m[k] - m['ssl-full cross-view']) / gap:+.0%}" if gap > 0 else "-" for k in ADAPTED)
        cells = " | ".join(f"{m[k]:.3f} ± {np.std(rows[k], ddof=1):.3f}" for k in ADAPTED)
        lines.append(f"| {d} | {m['ssl-full cross-view']:.3f} | {cells} | {shares} |")
    return "\n".join(lines)


def shift_rows(manifest: Path, encoder: Path, out: Path, config: Config, console: Console) -> str:
    """medssl shift on PA against AP, and on PA against itself (two halves)."""
    lines = [
        "| reference | target | MMD p | domain AUROC | KS features shifted | flagged |",
        "|---|---|---|---|---|---|",
    ]
    for target in ("AP", "PA"):
        shift = config.shift.model_copy(
            update={
                "reference": f"{manifest}:PA",
                "target": f"{manifest}:{target}",
                "encoder": str(encoder),
                "out": out / f"shift-PA-{target}",
            }
        )
        r = run_shift(config.model_copy(update={"shift": shift}), console)
        what = "PA (the other half)" if target == "PA" else "AP"
        lines.append(
            f"| PA | {what} | {r.mmd_p:.3g} | {r.domain_auroc:.3f} | {r.ks_significant} of {r.ks_features} "
            f"| {'yes' if r.shifted else 'no'} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", default="100%", help="labels of the source view: N%% or Nshot")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ssl-epochs", type=int, default=20, help="continued SSL epochs on the target view")
    ap.add_argument("--tent-lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--work", type=Path, default=HERE / "work" / "views")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console(stderr=True)
    out = args.work
    config = load_config(CONFIG, {"tracking.uri": f"sqlite:///{out}/mlflow.db", "tracking.enabled": False})
    manifest, labels = ingest_views(out, console)
    pa, ap_view = (View(name, manifest, labels[name], config, out, console) for name in ("PA", "AP"))
    table = {
        f"{s.name} -> {t.name}": direction(s, t, args, config, out, console) for s, t in ((pa, ap_view), (ap_view, pa))
    }
    header = (
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU. cxr_nih1000 at "
        f"{config.pretrain.size}x{config.pretrain.size}: PA {len(pa.train)} training / {len(pa.val)} validation "
        f"scans, AP {len(ap_view.train)} / {len(ap_view.val)}; MoCo encoders on each view's training part "
        f"({config.pretrain.epochs} epochs); {args.budget} of the source's training labels; {args.seeds} seeds "
        f"(mean ± sd); TENT lr {args.tent_lr}, one pass; continued SSL {args.ssl_epochs} epochs on the target's "
        "training part."
    )
    report = render(header, table) + "\n\n" + shift_rows(manifest, pa.encoder_path, out, config, console)
    print(report)
    if args.write_results:
        write_section(RESULTS, "adapt-views", report)


if __name__ == "__main__":
    main()
