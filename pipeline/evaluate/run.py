"""The evaluate stage: how good a detector is on labelled images it never saw, with intervals.

The images the label CSV lists go through ``ingest`` first (into ``out/ingested``), so they are read,
oriented and scaled exactly as the training images were; then the detector scores each scan (the mean over
its slices for a volume). A CSV that names scans by ``series_key`` (a review export) names scans already
ingested: they are read from ``evaluate.manifest``. Outputs: ``metrics.json`` (AUROC, AUPRC, sensitivity at
90 % and 95 % specificity, bootstrap 95 % intervals, and what could not be scored and why), ``scores.csv``
(path as the CSV gives it, or series_key; label; score) and ``roc.png``. MLflow gets the metrics, the JSON
and the PNG; ``scores.csv`` stays local, since the CSV's paths are the user's own and can carry identifiers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from pipeline.atomic import write_text
from pipeline.config import Config
from pipeline.data.labels import read_any_labels
from pipeline.data.manifest import read_rows
from pipeline.data.reasons import Reason
from pipeline.device import resolve
from pipeline.errors import EvaluateError
from pipeline.evaluate.metrics import bootstrap
from pipeline.inference import input_spec, scan_scores
from pipeline.ingest import run_ingest
from pipeline.pseudonym import file_key, label_key, read_key
from pipeline.registry.store import load_model
from pipeline.report import roc_png
from pipeline.tracking import log_artifact, log_metrics, stage_run


@dataclass(frozen=True)
class EvaluateResult:
    out: Path
    model: str
    scans: int
    normal: int
    abnormal: int
    metrics: dict[str, dict[str, float]]
    not_scored: dict[str, int] = field(default_factory=dict)
    run_id: str | None = None


def _ingest(config: Config, out: Path, paths: list[str], labels: Path, console: Console) -> Path:
    """The CSV's images through the ingest stage, into ``evaluate.ingested`` or ``out/ingested`` (a re-run, or
    a second model on the same images, converts only what changed)."""
    inner = config.model_copy(deep=True)
    inner.ingest.sources = [Path(p) for p in paths]
    inner.ingest.out = config.evaluate.ingested or out / "ingested"
    inner.ingest.labels = [labels]
    inner.tracking.enabled = False  # one MLflow run per evaluation: this stage's
    return run_ingest(inner, console).manifest


Scorer = Callable[[pd.DataFrame, Path], pd.Series]


def _by_path(
    config: Config, listed: dict[str, int], out: Path, console: Console, score: Scorer
) -> tuple[list[dict[str, Any]], Counter]:
    """(scored rows, unscored counts by reason) of a ``path,label`` CSV: its images ingested first."""
    cfg = config.evaluate
    present = sorted(p for p in listed if Path(p).exists())
    if not present:
        raise EvaluateError(f"{cfg.labels}: none of the listed images exists")
    manifest = _ingest(config, out, present, cfg.labels, console)
    key = read_key(config.ingest.secret(), manifest.parent) or b""
    rows = read_rows(manifest)
    scores = score(rows, manifest.parent)
    reasons = dict(zip(rows.series_key, rows.reason, strict=True))
    # Ingest marked each row a CSV path labelled (an image, a DICOM file or a series folder) with its key.
    labelled_by = {k: scan for k, scan in zip(rows.label_key, rows.series_key, strict=True) if isinstance(k, str) and k}
    table, missing = [], Counter()
    for path, label in listed.items():
        scan = labelled_by.get(label_key(key, path), "")
        if not Path(path).exists():
            missing[str(Reason.MISSING_FILE)] += 1
        elif scan in scores.index:
            table.append({"path": _as_listed(path, cfg.labels), "label": label, "score": float(scores[scan])})
        else:
            missing[reasons.get(scan) or reasons.get(file_key(key, path)) or "NOT_INGESTED"] += 1
    return table, missing


def _by_key(config: Config, listed: dict[str, int], score: Scorer) -> tuple[list[dict[str, Any]], Counter]:
    """(scored rows, unscored counts by reason) of a ``series_key,label`` CSV, read from ``evaluate.manifest``."""
    cfg = config.evaluate
    if cfg.manifest is None:
        raise EvaluateError(f"{cfg.labels} names scans by series_key: pass --manifest (the ingest manifest of them)")
    rows = read_rows(cfg.manifest)
    scores = score(rows[rows.series_key.isin(set(listed))], cfg.manifest.parent)
    reasons = dict(zip(rows.series_key, rows.reason, strict=True))
    table, missing = [], Counter()
    for scan, label in listed.items():
        if scan in scores.index:
            table.append({"series_key": scan, "label": label, "score": float(scores[scan])})
        else:
            missing[reasons.get(scan) or "NOT_INGESTED"] += 1
    return table, missing


def run_evaluate(config: Config, console: Console) -> EvaluateResult:
    """Score every labelled image of ``evaluate.labels`` with ``evaluate.model``; write and log the metrics."""
    cfg = config.evaluate
    if cfg.model is None or cfg.labels is None:
        raise EvaluateError("evaluate needs a model (--model) and a label CSV (--labels)")
    model, tags = load_model(cfg.model, config.tracking)
    spec = input_spec(model, tags, None)
    named, rows = read_any_labels(cfg.labels)
    listed = {scan: row.label for scan, row in rows.items() if row.label is not None}
    if not listed:
        raise EvaluateError(f"{cfg.labels}: no row with a 0/1 label")
    out = cfg.out or Path("evaluation")  # not beside the CSV: its folder may be read-only shared data
    device = resolve(config.finetune.device).device

    def score(manifest_rows: pd.DataFrame, root: Path) -> pd.Series:
        """The score of each accepted scan, by series_key (screened files only: a bad one is not scored)."""
        accepted = manifest_rows[manifest_rows.status == "accepted"].reset_index(drop=True)
        found = scan_scores(model, accepted, root, spec, config.pretrain.slices_per_volume, device)
        return found.set_index("scan").score

    if named == "series_key":
        table, missing = _by_key(config, listed, score)
    else:
        table, missing = _by_path(config, listed, out, console, score)
    if missing:
        console.print(f"[yellow]not scored: {', '.join(f'{r} {n}' for r, n in missing.most_common())}[/]")
    scores = pd.DataFrame(table, columns=[named, "label", "score"])
    labels, values = scores.label.to_numpy(), scores.score.to_numpy()
    if set(labels.tolist()) != {0, 1}:
        raise EvaluateError(f"{cfg.labels}: the scored images need both normal (0) and abnormal (1) labels")
    result = EvaluateResult(
        out=out,
        model=cfg.model,
        scans=len(scores),
        normal=int((labels == 0).sum()),
        abnormal=int((labels == 1).sum()),
        metrics=bootstrap(labels, values, cfg.bootstrap, cfg.seed),
        not_scored=dict(missing.most_common()),
    )
    with stage_run(config, "evaluate", tags={"medssl.model": cfg.model}) as run:
        result = replace(result, run_id=run.info.run_id if run else None)
        write_text(out / "scores.csv", scores.to_csv(index=False))
        write_text(out / "metrics.json", json.dumps(_summary(result), indent=2))
        auroc = result.metrics["auroc"]["value"]
        title = f"{cfg.labels.parent.name}/{cfg.labels.name}: {len(scores)} scans"
        roc_png({Path(cfg.model).name: (labels, values, auroc)}, out / "roc.png", title)
        log_metrics({name: m["value"] for name, m in result.metrics.items()})
        log_artifact(out / "metrics.json")
        log_artifact(out / "roc.png")
    return result


def _as_listed(path: str, csv: Path) -> str:
    """The path as the CSV would write it: relative to the CSV's folder when it lies below it."""
    try:
        return str(Path(path).relative_to(csv.parent.resolve()))
    except ValueError:
        return path


def _summary(result: EvaluateResult) -> dict[str, Any]:
    return {
        "model": result.model,
        "scans": result.scans,
        "normal": result.normal,
        "abnormal": result.abnormal,
        "metrics": result.metrics,
        "not_scored": result.not_scored,
        "mlflow_run_id": result.run_id,
    }


def summary_table(result: EvaluateResult) -> Table:
    table = Table(title=f"evaluate: {result.scans} scans ({result.normal} normal, {result.abnormal} abnormal)")
    for column in ("metric", "value", "95 % CI"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    for name, m in result.metrics.items():
        table.add_row(name.replace("_", " "), f"{m['value']:.3f}", f"{m['ci_low']:.3f} - {m['ci_high']:.3f}")
    if result.not_scored:
        table.add_row("not scored", ", ".join(f"{r} {n}" for r, n in result.not_scored.items()), "")
    return table
