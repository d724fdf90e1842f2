"""The label-efficiency curve: validation AUROC against the number of labels, SSL encoder against scratch.

The one picture that tells a hospital whether pretraining on its archive pays: for each budget, the
finetune stage runs on the SSL encoder (in ``finetune.mode``) and on the same network from random weights
(trained end to end, as one would without SSL), each over ``finetune.seeds`` label draws scored on the same
validation part. Nothing is registered: the curve measures, ``medssl finetune`` ships.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline.atomic import write_text
from pipeline.config import Config
from pipeline.errors import CurveError
from pipeline.finetune import run_finetune
from pipeline.report import label_efficiency_png, report_table
from pipeline.tracking import log_artifact, log_metrics, stage_run


@dataclass(frozen=True)
class CurveResult:
    figure: Path
    table: Path
    points: dict[str, list[tuple[int, float, float]]]  # arm -> (labels used, AUROC mean, sd) per budget


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
    points: dict[str, list[tuple[int, float, float]]] = {}
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
                points.setdefault(arm, []).append((labels, done.mean, done.sd))
                log_metrics({f"auroc_{arm.split()[0]}_{labels}": done.mean})
        title = f"validation AUROC vs labels ({fine.seeds} seeds)"
        figure = label_efficiency_png(points, out / "label-efficiency.png", title)
        table = out / "curve.json"
        rows = [
            {"arm": arm, "budget": budget, "labels": n, "auroc_mean": mean, "auroc_sd": sd}
            for arm, cells in points.items()
            for budget, (n, mean, sd) in zip(cfg.budgets, cells, strict=True)
        ]
        write_text(table, json.dumps(rows, indent=2))
        log_artifact(figure)
        log_artifact(table)
    return CurveResult(figure, table, points)


def summary_table(result: CurveResult) -> Table:
    rows = [
        (f"{arm}, {n} labels", f"{mean:.3f} ± {sd:.3f}")
        for arm, cells in result.points.items()
        for n, mean, sd in cells
    ]
    return report_table("label efficiency (validation AUROC)", [*rows, ("figure", str(result.figure))])
