"""``medssl evaluate``, ``promote``, ``score``, ``publish`` and ``run``: judge, gate and serve the detector (and
send its results back to the PACS); the whole chain."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.app import ConfigOpt, ManifestOpt, NoTracking, app, console, run_stage, tracking_off


@app.command()
def evaluate(
    model: Annotated[
        str | None, typer.Option(help="models:/<name>-detector@champion (or any model URI), or detector.pt.")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Label CSV of the images to score: path,label, or series_key,label (a review export)."),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(help="The ingest manifest.parquet whose scans a series_key CSV names (evaluate.manifest)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for metrics.json, scores.csv and roc.png.")
    ] = None,
    no_tracking: NoTracking = False,
    config: ConfigOpt = None,
) -> None:
    """Score labelled images a detector never saw: AUROC, AUPRC, sensitivity at 90/95 % specificity, 95 % CIs.

    The images of a path CSV (PNG, JPEG, DICOM files or series folders) are ingested first, so they are read
    exactly as training images were; a series_key CSV names scans of --manifest, already ingested.
    """
    from pipeline.evaluate import run_evaluate, summary_table

    overrides = {
        "evaluate.model": model,
        "evaluate.labels": labels,
        "evaluate.manifest": manifest,
        "evaluate.out": out,
        **tracking_off(no_tracking),
    }
    result = run_stage(run_evaluate, config, overrides)
    console.print(summary_table(result))
    console.print(f"Written: {result.out}/metrics.json, scores.csv, roc.png")


@app.command()
def promote(
    name: Annotated[str | None, typer.Option(help="Registered detector (default medssl-detector).")] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Label CSV of the evaluation set both models are scored on.")
    ] = None,
    challenger: Annotated[
        str | None, typer.Option(help="Version to gate (default: the one @challenger names).")
    ] = None,
    margin: Annotated[
        float | None, typer.Option(help="What the paired interval's lower bound must exceed (default 0).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for the evaluations and decision.json.")
    ] = None,
    shift: Annotated[
        Path | None,
        typer.Option(help="shift.json of the site to serve: a shifted site needs a challenger adapted to it."),
    ] = None,
    max_shift: Annotated[
        float | None, typer.Option(help="Domain-classifier AUROC above which a shift counts (default 0.75).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Move @champion to @challenger (or --challenger) only if it beats the champion on the same images beyond
    chance (the paired 95 % interval of the AUROC difference above the margin) and, with --shift, only if it
    was adapted to the site when that site has shifted."""
    from pipeline.promote import run_promote

    overrides = {
        "promote.name": name,
        "promote.labels": labels,
        "promote.challenger": challenger,
        "promote.margin": margin,
        "promote.out": out,
        "promote.shift": shift,
        "promote.max_shift": max_shift,
    }
    result = run_stage(run_promote, config, overrides)
    verdict = "[green]promoted[/]" if result.promoted else "[yellow]not promoted[/]"
    console.print(f"{verdict}: version {result.challenger_version} ({result.reason})")


@app.command()
def score(
    manifest: ManifestOpt = None,
    model: Annotated[
        str | None, typer.Option(help="Detector URI or .pt (default models:/medssl-detector@champion).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results CSV (default: scores.csv by it).")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Flag scores at or above it (default: the detector's own operating point).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Score the manifest's series with the champion (or --model); series this version already scored are
    skipped, new rows are appended to the results table."""
    from pipeline.score import run_score, summary_table

    overrides = {
        "score.manifest": manifest,
        "score.model": model,
        "score.out": out,
        "score.threshold": threshold,
    }
    result = run_stage(run_score, config, overrides)
    console.print(summary_table(result))


@app.command()
def publish(
    scores: Annotated[
        Path | None, typer.Option(help="Results table of medssl score (default: score.out, or beside the manifest).")
    ] = None,
    dicomweb: Annotated[
        str | None,
        typer.Option(help="DICOMweb root to store the SRs into (default: ingest.dicomweb.url, the PACS pulled from)."),
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", "-m", help="Ingest manifest of the scored series (default: beside it).")
    ] = None,
    no_tracking: NoTracking = False,
    config: ConfigOpt = None,
) -> None:
    """Send the results back to the PACS: one DICOM SR per scored series (TID 1500: normal/abnormal, score,
    threshold, model and version; unverified), stored over STOW-RS. The original UIDs are read from the
    ingested DICOM files; a ledger beside the table keeps a result from being sent twice, and one the PACS did
    not take is listed with its reason and sent on the next run."""
    from pipeline.publish import run_publish, summary_table

    overrides = {
        "publish.scores": scores,
        "publish.url": dicomweb,
        "publish.manifest": manifest,
        **tracking_off(no_tracking),
    }
    result = run_stage(run_publish, config, overrides)
    console.print(summary_table(result))


@app.command("run")
def run_all(
    config: ConfigOpt = None,
    force: Annotated[
        list[str] | None,
        typer.Option(help="Redo this stage (pretrain to promote) though its inputs are unchanged; repeatable."),
    ] = None,
) -> None:
    """The whole pipeline: ingest -> pretrain -> finetune -> curve -> evaluate -> promote, one MLflow parent
    run with a nested run per stage, each stage fed by the one before; stages whose inputs are unchanged are
    skipped. The curve runs when curve.budgets names budgets."""
    from pipeline.orchestrate.workflow import run_workflow

    result = run_stage(lambda cfg, con: run_workflow(cfg, con, force or ()), config, {})
    table = Table(title="medssl run", show_header=True, header_style="bold")
    table.add_column("stage")
    table.add_column("outcome")
    for stage, outcome in result.outcome.items():
        table.add_row(stage, outcome)
    console.print(table)
    for name, value in result.outputs.items():
        console.print(f"{name}: {value}")
