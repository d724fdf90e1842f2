"""The ``medssl`` command line: thin wrappers that build a config and call one stage function each."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cluster import ClusterError
from pipeline.config import Config, ConfigError, load_config
from pipeline.labels import LabelsError

app = typer.Typer(
    help="medssl: turn an archive of unlabeled scans into a few-label anomaly detector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
T = TypeVar("T")
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (see configs/default.yaml).")]


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def _run_stage(
    stage: Callable[[Config, Console], T],
    config: Path | None,
    overrides: dict[str, Any],
    errors: tuple[type[Exception], ...],
) -> T:
    """Config file, then flags, then the stage; the errors a user can fix become one line and exit code 2."""
    try:
        return stage(load_config(config, overrides), console)
    except (ConfigError, *errors) as exc:
        raise _fail(str(exc)) from None


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
def ingest(
    sources: Annotated[
        list[Path] | None, typer.Argument(help="Folders or files to ingest, searched recursively (or ingest.sources).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder for volumes/ and manifest.parquet (or ingest.out)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Local Dask worker processes (default: one per core).")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Use an existing Dask scheduler, e.g. tcp://host:8786.")] = None,
    labels: Annotated[
        list[Path] | None,
        typer.Option("--labels", help="Label CSV naming images, DICOM files or series folders (repeatable)."),
    ] = None,
    tilt: Annotated[str | None, typer.Option(help="Gantry tilt: reject, raw or resample.")] = None,
    nonuniform_spacing: Annotated[str | None, typer.Option(help="Uneven slice gaps: reject, raw or resample.")] = None,
    compress: Annotated[
        bool | None, typer.Option("--compress/--no-compress", help="Write .nii.gz (default) or .nii.")
    ] = None,
    site: Annotated[str | None, typer.Option(help="Site name recorded in the manifest.")] = None,
    dicomweb: Annotated[
        str | None,
        typer.Option(
            "--dicomweb",
            metavar="URL",
            help="First pull the studies not pulled before from this DICOMweb root (QIDO-RS, WADO-RS), e.g. "
            "http://pacs:8042/dicom-web, into <out>/staging (or ingest.dicomweb.staging), then ingest them with "
            "any SRC (or ingest.dicomweb.url).",
        ),
    ] = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="With --dicomweb: first StudyDate to pull (inclusive)."
        ),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", help="With --dicomweb: last StudyDate to pull (inclusive)."
        ),
    ] = None,
    no_tracking: Annotated[bool, typer.Option("--no-tracking", help="Do not log to MLflow.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Convert DICOM series and 2D images to NIfTI plus manifest.parquet, rejecting what cannot be stacked.

    Re-running over the same sources converts only what is new or changed; a killed run resumes. With
    --dicomweb, studies not fetched before are first retrieved from the PACS (a killed pull resumes too).
    """
    from pipeline.ingest import IngestError, run_ingest, summary_table

    overrides = {
        "ingest.sources": [str(s) for s in sources] if sources else None,
        "ingest.out": str(out) if out else None,
        "ingest.labels": [str(p) for p in labels] if labels else None,
        "ingest.tilt": tilt,
        "ingest.nonuniform_spacing": nonuniform_spacing,
        "ingest.compress": compress,
        "ingest.site": site,
        "ingest.dicomweb.url": dicomweb,
        "ingest.dicomweb.since": since.date() if since else None,
        "ingest.dicomweb.until": until.date() if until else None,
        "dask.workers": workers,
        "dask.scheduler": scheduler,
        "tracking.enabled": False if no_tracking else None,
    }
    result = _run_stage(run_ingest, config, overrides, (LabelsError, IngestError, ClusterError))
    console.print(summary_table(result))
    if result.converted == 0:
        console.print(f"Nothing new to convert: all {result.unchanged} series/images are up to date.")


@app.command()
def pretrain(
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", "-m", help="Ingest manifest.parquet to train on (or pretrain.manifest)."),
    ] = None,
    method: Annotated[str | None, typer.Option(help="simclr, moco, dino or mae.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for checkpoints and the encoder (default: beside it).")
    ] = None,
    spatial_dims: Annotated[
        int | None, typer.Option("--spatial-dims", help="2: images and volume slices; 3: volume patches.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the data.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per step (per process).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    name: Annotated[str | None, typer.Option(help="Registry name prefix: <name>-encoder.")] = None,
    no_tracking: Annotated[bool, typer.Option("--no-tracking", help="Do not log to MLflow.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Self-supervised pretraining of an encoder on the manifest's accepted (unlabeled) scans.

    Saves encoder.pt, logs the run to MLflow and registers <name>-encoder. A killed run resumes from its
    last epoch; a finished one with the same settings and data is not run again. Under torchrun each
    process takes one GPU (DistributedDataParallel).
    """
    from pipeline.pretrain.rows import PretrainDataError
    from pipeline.pretrain.run import run_pretrain, summary_table

    overrides = {
        "pretrain.manifest": str(manifest) if manifest else None,
        "pretrain.method": method,
        "pretrain.out": str(out) if out else None,
        "pretrain.spatial_dims": spatial_dims,
        "pretrain.epochs": epochs,
        "pretrain.batch_size": batch_size,
        "pretrain.device": device,
        "pretrain.name": name,
        "tracking.enabled": False if no_tracking else None,
    }
    result = _run_stage(run_pretrain, config, overrides, (PretrainDataError,))
    console.print(summary_table(result))


@app.command()
def finetune(
    encoder: Annotated[
        str | None,
        typer.Option(help="models:/<name>-encoder@<method>, a path to encoder.pt, or scratch (finetune.encoder)."),
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", "-m", help="Ingest manifest.parquet holding the images.")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(help="Label CSV (path,label[,patient_id,group]); default: the labels stored at ingest."),
    ] = None,
    budget: Annotated[
        str | None, typer.Option(help="Labels per class from the training part: Nshot, or P% (1%, 10%, 100%).")
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="linear (probe), full (fine-tune all), oneclass (normal labels only).")
    ] = None,
    seeds: Annotated[int | None, typer.Option(help="Repeats with other label draws; mean and sd reported.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for detector.pt and finetune.json.")] = None,
    name: Annotated[str | None, typer.Option(help="Registry name prefix: <name>-detector.")] = None,
    no_tracking: Annotated[bool, typer.Option("--no-tracking", help="Do not log to MLflow.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Few-label anomaly detection (normal vs abnormal) from an encoder, scored on held-out scans.

    The labelled scans are split into training and validation parts (stratified; a patient or
    near-duplicate group never on both sides); each repeat draws the budget from the training part. The
    first repeat's detector is registered as <name>-detector with the alias challenger.
    """
    from pipeline.finetune.data import FinetuneDataError
    from pipeline.finetune.run import run_finetune, summary_table
    from pipeline.pretrain.rows import PretrainDataError

    overrides = {
        "finetune.encoder": encoder,
        "finetune.manifest": str(manifest) if manifest else None,
        "finetune.labels": str(labels) if labels else None,
        "finetune.budget": budget,
        "finetune.mode": mode,
        "finetune.seeds": seeds,
        "finetune.out": str(out) if out else None,
        "finetune.name": name,
        "tracking.enabled": False if no_tracking else None,
    }
    result = _run_stage(run_finetune, config, overrides, (FinetuneDataError, LabelsError, PretrainDataError))
    console.print(summary_table(result))


@app.command()
def curve(
    encoder: Annotated[
        str | None, typer.Option(help="The SSL encoder: models:/<name>-encoder@<method> or encoder.pt.")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", "-m", help="Ingest manifest.parquet holding the images.")
    ] = None,
    labels: Annotated[Path | None, typer.Option(help="Label CSV (default: the labels stored at ingest).")] = None,
    budgets: Annotated[
        str | None, typer.Option(help="Comma-separated budgets, e.g. 1shot,4shot,16shot,10% (curve.budgets).")
    ] = None,
    mode: Annotated[str | None, typer.Option(help="How the SSL arm trains: linear, full or oneclass.")] = None,
    seeds: Annotated[int | None, typer.Option(help="Label draws per budget and arm (mean ± sd).")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for curve.json and label-efficiency.png.")
    ] = None,
    no_tracking: Annotated[bool, typer.Option("--no-tracking", help="Do not log to MLflow.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Label efficiency: validation AUROC against the number of labels, SSL encoder against scratch.

    Each budget is fine-tuned on the SSL encoder and on the same network from random weights, over the
    same validation part; nothing is registered. Writes curve.json and label-efficiency.png.
    """
    from pipeline.curve import run_curve, summary_table
    from pipeline.finetune.data import FinetuneDataError
    from pipeline.pretrain.rows import PretrainDataError

    overrides = {
        "finetune.encoder": encoder,
        "finetune.manifest": str(manifest) if manifest else None,
        "finetune.labels": str(labels) if labels else None,
        "finetune.mode": mode,
        "finetune.seeds": seeds,
        "curve.budgets": [b.strip() for b in budgets.split(",") if b.strip()] if budgets else None,
        "curve.out": str(out) if out else None,
        "tracking.enabled": False if no_tracking else None,
    }
    result = _run_stage(run_curve, config, overrides, (FinetuneDataError, LabelsError, PretrainDataError))
    console.print(summary_table(result))


@app.command()
def evaluate(
    model: Annotated[
        str | None, typer.Option(help="models:/<name>-detector@champion (or any model URI), or detector.pt.")
    ] = None,
    labels: Annotated[Path | None, typer.Option(help="Label CSV (path,label) of the images to score.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for metrics.json, scores.csv and roc.png.")
    ] = None,
    no_tracking: Annotated[bool, typer.Option("--no-tracking", help="Do not log to MLflow.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Score labelled images a detector never saw: AUROC, AUPRC, sensitivity at 90/95 % specificity, 95 % CIs.

    The images (PNG, JPEG, DICOM files or series folders) are ingested first, so they are read exactly as
    training images were.
    """
    from pipeline.evaluate.run import EvaluateError, run_evaluate, summary_table
    from pipeline.ingest import IngestError

    overrides = {
        "evaluate.model": model,
        "evaluate.labels": str(labels) if labels else None,
        "evaluate.out": str(out) if out else None,
        "tracking.enabled": False if no_tracking else None,
    }
    result = _run_stage(run_evaluate, config, overrides, (EvaluateError, LabelsError, IngestError, ClusterError))
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
    margin: Annotated[float | None, typer.Option(help="AUROC the challenger must gain over the champion.")] = None,
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
    """Move @champion to @challenger (or --challenger) only if it beats the champion on the same images by the
    margin (and, with --shift, only if it was adapted to the site when that site has shifted)."""
    from pipeline.evaluate.run import EvaluateError
    from pipeline.ingest import IngestError
    from pipeline.promote import run_promote

    overrides = {
        "promote.name": name,
        "promote.labels": str(labels) if labels else None,
        "promote.challenger": challenger,
        "promote.margin": margin,
        "promote.out": str(out) if out else None,
        "promote.shift": str(shift) if shift else None,
        "promote.max_shift": max_shift,
    }
    result = _run_stage(run_promote, config, overrides, (EvaluateError, LabelsError, IngestError, ClusterError))
    verdict = "[green]promoted[/]" if result.promoted else "[yellow]not promoted[/]"
    console.print(f"{verdict}: version {result.challenger_version} ({result.reason})")


@app.command()
def suggest(
    encoder: Annotated[
        str | None, typer.Option(help="Encoder URI or encoder.pt whose embeddings measure diversity.")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", "-m", help="Ingest manifest.parquet of the archive.")
    ] = None,
    n: Annotated[int | None, typer.Option("--n", help="Scans to suggest.")] = None,
    labels: Annotated[Path | None, typer.Option(help="Label CSV of the scans already labelled.")] = None,
    detector: Annotated[
        str | None, typer.Option(help="Current detector: pick among the scans it is least sure of.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="CSV to write (path,label with label empty).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Which unlabeled scans to label next: diverse in the SSL embedding space (and uncertain under the
    current detector, when given). Writes a CSV that medssl finetune --labels reads once it is filled in."""
    from pipeline.finetune.data import FinetuneDataError
    from pipeline.pretrain.rows import PretrainDataError
    from pipeline.suggest import run_suggest

    overrides = {
        "suggest.encoder": encoder,
        "suggest.manifest": str(manifest) if manifest else None,
        "suggest.n": n,
        "suggest.labels": str(labels) if labels else None,
        "suggest.detector": detector,
        "suggest.out": str(out) if out else None,
    }
    result = _run_stage(run_suggest, config, overrides, (FinetuneDataError, LabelsError, PretrainDataError))
    console.print(
        f"Suggested {result.suggested} of {result.pool} unlabeled scans"
        + (" (among the detector's least sure)" if result.used_detector else "")
        + f": {result.out}"
    )


@app.command()
def shift(
    reference: Annotated[str | None, typer.Option(help="MANIFEST[:SITE]: the site the model knows.")] = None,
    target: Annotated[
        str | None, typer.Option(help="MANIFEST[:SITE]: the new site (the reference again: two random halves).")
    ] = None,
    encoder: Annotated[
        str | None, typer.Option(help="Encoder URI or encoder.pt whose embeddings are compared.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for shift.json and shift.png.")] = None,
    config: ConfigOpt = None,
) -> None:
    """How far a target site's scans are from a reference site's: embedding MMD with a permutation
    p-value, a domain classifier's AUROC, per-feature KS tests, and metadata and intensity differences."""
    from pipeline.pretrain.rows import PretrainDataError
    from pipeline.shift import run_shift, summary_table

    overrides = {
        "shift.reference": reference,
        "shift.target": target,
        "shift.encoder": encoder,
        "shift.out": str(out) if out else None,
    }
    result = _run_stage(run_shift, config, overrides, (PretrainDataError,))
    console.print(summary_table(result))
    console.print(f"Report: {result.out / 'shift.json'}, {result.out / 'shift.png'}")


@app.command()
def adapt(
    model: Annotated[
        str | None, typer.Option(help="Detector (adabn, tent) or encoder (ssl) to adapt: URI or .pt path.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="MANIFEST[:SITE] of the new site's unlabeled scans.")] = None,
    method: Annotated[
        str | None,
        typer.Option(help="adabn (BatchNorm statistics), tent (+ entropy of BN affine), ssl (continued pretraining)."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder.")] = None,
    name: Annotated[str | None, typer.Option(help="Registry name prefix: <name>-detector or <name>-encoder.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Adapt a model to a new site from its unlabeled scans; the result is registered with its lineage
    (adapted from, adapted to), which medssl promote --shift checks."""
    from pipeline.adapt import AdaptError, run_adapt, summary_table
    from pipeline.pretrain.rows import PretrainDataError

    overrides = {
        "adapt.model": model,
        "adapt.target": target,
        "adapt.method": method,
        "adapt.out": str(out) if out else None,
        "adapt.name": name,
    }
    result = _run_stage(run_adapt, config, overrides, (AdaptError, PretrainDataError))
    console.print(summary_table(result))


@app.command()
def score(
    manifest: Annotated[Path | None, typer.Option("--manifest", "-m", help="Ingest manifest.parquet to score.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Detector URI or .pt (default models:/medssl-detector@champion).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Results CSV (default: scores.csv by it).")] = None,
    threshold: Annotated[float | None, typer.Option(help="Scores at or above it are flagged abnormal.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Score the manifest's series with the champion (or --model); series this version already scored are
    skipped, new rows are appended to the results table."""
    from pipeline.evaluate.run import EvaluateError
    from pipeline.pretrain.rows import PretrainDataError
    from pipeline.score import run_score, summary_table

    overrides = {
        "score.manifest": str(manifest) if manifest else None,
        "score.model": model,
        "score.out": str(out) if out else None,
        "score.threshold": threshold,
    }
    result = _run_stage(run_score, config, overrides, (EvaluateError, PretrainDataError))
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
    from pipeline.evaluate.run import EvaluateError
    from pipeline.finetune.data import FinetuneDataError
    from pipeline.ingest import IngestError
    from pipeline.pretrain.rows import PretrainDataError
    from pipeline.workflow import run_workflow

    errors = (IngestError, ClusterError, PretrainDataError, FinetuneDataError, EvaluateError, LabelsError)
    result = _run_stage(lambda cfg, con: run_workflow(cfg, con, force or ()), config, {}, errors)
    table = Table(title="medssl run", show_header=True, header_style="bold")
    table.add_column("stage")
    table.add_column("outcome")
    for stage, outcome in result.outcome.items():
        table.add_row(stage, outcome)
    console.print(table)
    for name, value in result.outputs.items():
        console.print(f"{name}: {value}")


if __name__ == "__main__":
    app()
