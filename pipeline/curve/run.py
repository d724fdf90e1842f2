"""The label-efficiency curve: validation AUROC against the number of labels, SSL encoder against scratch.

The one picture that tells a hospital whether pretraining on its archive pays: for each budget, the
finetune stage runs on the SSL encoder (in ``finetune.mode``) and on the same network from random weights
(trained end to end, as one would without SSL), each over ``finetune.seeds`` label draws scored on the same
validation part. Each point carries a 95 % bootstrap interval over those repeats and scans, so a gap
between the arms can be read against what the validation part can resolve. Nothing is registered: the
curve measures, ``medssl finetune`` ships.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from pipeline.atomic import write_text
from pipeline.config import Config
from pipeline.errors import CurveError
from pipeline.finetune import run_finetune
from pipeline.intervals import auroc_draws, interval, repeat_scores
from pipeline.report import label_efficiency_png, report_table
from pipeline.tracking import log_artifact, log_metrics, stage_run

RESAMPLES = 1000


@dataclass(frozen=True)
class CurveResult:
    figure: Path
    table: Path
    points: dict[str, list[tuple[int, float, float, float]]]  # arm -> (labels, AUROC mean, 95 % low, high)


def run_curve(config: Config, console: Console) -> CurveResult:
    """Fine-tune at each ``curve.budgets`` on the SSL encoder and on scratch; write curve.json and the PNG."""
    cfg, fine = config.curve, config.finetune
    if not cfg.budgets:
        raise CurveError("curve needs budgets (curve.budgets or --budgets, e.g. 1shot,4shot,16shot)")
    if fine.manifest is None:
        raise CurveError("curve needs the ingest manifest (finetune.manifest or --manifest)")
    out = cfg.out or fine.manifest.parent / "curve"
    arms = {
        f"ssl ({fine.mode})": (fine.encoder, fine.mode),
        f"scratch ({cfg.scratch_mode})": ("scratch", cfg.scratch_mode),
    }
    points: dict[str, list[tuple[int, float, float, float]]] = {}
    with stage_run(config, "curve"):
        for arm, (encoder, mode) in arms.items():
            for budget in cfg.budgets:
                cell = fine.model_copy(
                    update={
                        "encoder": encoder,
                        "mode": mode,
                        "budget": budget,
                        "register_detector": False,
                        "out": out / f"{arm.split()[0]}-{budget.replace('%', 'pct')}",
                    }
                )
                done = run_finetune(config.model_copy(update={"finetune": cell}), console)
                labels = round(sum(done.labels_used) / len(done.labels_used))
                points.setdefault(arm, []).append((labels, done.mean, *_interval(done.scores, fine.seed)))
                log_metrics({f"auroc_{arm.split()[0]}_{labels}": done.mean})
        title = f"validation AUROC vs labels ({fine.seeds} seeds)"
        figure = label_efficiency_png(points, out / "label-efficiency.png", title)
        table = out / "curve.json"
        rows = [
            {"arm": arm, "budget": budget, "labels": n, "auroc_mean": mean, "ci_low": low, "ci_high": high}
            for arm, cells in points.items()
            for budget, (n, mean, low, high) in zip(cfg.budgets, cells, strict=True)
        ]
        write_text(table, json.dumps(rows, indent=2))
        log_artifact(figure)
        log_artifact(table)
    return CurveResult(figure, table, points)


def _interval(scores: Path | None, seed: int) -> tuple[float, float]:
    """The 95 % interval of a cell's mean AUROC over its repeats and validation scans."""
    if scores is None:
        raise CurveError("the curve needs labelled validation scans of both classes in every cell")
    labels, rows = repeat_scores({"cell": pd.read_csv(scores)})
    return interval(auroc_draws(labels, rows, RESAMPLES, seed)["cell"])


def summary_table(result: CurveResult) -> Table:
    rows = [
        (f"{arm}, {n} labels", f"{mean:.3f} (95 % CI {low:.3f}-{high:.3f})")
        for arm, cells in result.points.items()
        for n, mean, low, high in cells
    ]
    return report_table("label efficiency (validation AUROC)", [*rows, ("figure", str(result.figure))])
