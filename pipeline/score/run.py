"""The score stage: a registered detector (the champion, by default) scores newly ingested series.

The results table grows batch by batch: one row per series and model version, with the score, the decision
at the threshold and when it was made. A series that this model version has already scored is not scored
again, so the nightly batch can run over a manifest that keeps growing; a new champion scores everything
once. The alias is resolved to its version number at the start, so one batch is scored by one version even
if the alias moves meanwhile. Rows hold the manifest's keyed ``series_key``, never a path or patient name.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table
from torch import nn

from models.detectors import NormalBank
from pipeline.atomic import write_text
from pipeline.config import Config
from pipeline.data.manifest import read_manifest
from pipeline.device import resolve
from pipeline.errors import ScoreError
from pipeline.inference import input_spec, scan_scores
from pipeline.registry.store import load_model, pin_model
from pipeline.report import report_table
from pipeline.tracking import log_artifact, log_metrics, stage_run

COLUMNS = ["series_key", "score", "decision", "threshold", "model", "version", "scored_at"]


@dataclass(frozen=True)
class ScoreResult:
    out: Path
    model: str
    version: str
    scored: int
    already_scored: int
    not_scored: int
    flagged: int
    threshold: float


def decision_threshold(model: nn.Module, tags: dict[str, str], given: float | None) -> float:
    """The threshold a batch flags at: the one given, else the detector's operating point (set by finetune on
    its validation part, carried by the module and its registry tags), else a classifier's logit 0
    (probability 0.5). A one-class detector scores distances, whose scale no default fits."""
    point = getattr(model, "operating_point", None) or {}
    if given is not None:
        return given
    if "threshold" in point:
        return float(point["threshold"])
    if "operating_threshold" in tags:
        return float(tags["operating_threshold"])
    if isinstance(model, NormalBank):
        raise ScoreError("this one-class detector has no operating point: give --threshold (from medssl evaluate)")
    return 0.0


def run_score(config: Config, console: Console) -> ScoreResult:
    """Score the manifest's accepted series not yet scored by this model version; append them to the table."""
    cfg = config.score
    if cfg.manifest is None:
        raise ScoreError("score needs the manifest of the ingested series (--manifest)")
    name, version, ref = pin_model(cfg.model, config.tracking)
    model, tags = load_model(ref, config.tracking)
    spec = input_spec(model, tags, None)
    threshold = decision_threshold(model, tags, cfg.threshold)
    out = cfg.out or cfg.manifest.parent / "scores.csv"
    previous = (
        pd.read_csv(out, dtype={"version": str, "series_key": str}) if out.is_file() else pd.DataFrame(columns=COLUMNS)
    )
    done = set(previous.series_key[(previous.model == name) & (previous.version == version)])
    accepted = read_manifest(cfg.manifest)
    todo = accepted[~accepted.series_key.isin(done)].reset_index(drop=True)
    device = resolve(cfg.device).device
    scored = scan_scores(model, todo, cfg.manifest.parent, spec, config.pretrain.slices_per_volume, device)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    new = pd.DataFrame(
        {
            "series_key": scored.scan,
            "score": scored.score.astype(float),
            "decision": ["abnormal" if s >= threshold else "normal" for s in scored.score],
            "threshold": threshold,
            "model": name,
            "version": version,
            "scored_at": now,
        },
        columns=COLUMNS,
    )
    table = new if previous.empty else pd.concat([previous, new], ignore_index=True)
    result = ScoreResult(
        out=out,
        model=name,
        version=version,
        scored=len(new),
        already_scored=len(accepted) - len(todo),
        not_scored=len(todo) - len(new),
        flagged=int((new.decision == "abnormal").sum()),
        threshold=threshold,
    )
    with stage_run(config, "score", tags={"medssl.model": f"{name}/{version}"}):
        write_text(out, table.to_csv(index=False))
        log_metrics({"scored": result.scored, "flagged": result.flagged, "not_scored": result.not_scored})
        log_artifact(out)
    return result


def summary_table(result: ScoreResult) -> Table:
    rows = [
        ("model", f"{result.model} version {result.version}"),
        ("scored now", str(result.scored)),
        ("flagged abnormal", f"{result.flagged} (score >= {result.threshold:.4g})"),
        ("already scored by this version", str(result.already_scored)),
        ("not scored (missing or changed files)", str(result.not_scored)),
        ("results", str(result.out)),
    ]
    return report_table("score", rows)
