"""``medssl pretrain``, ``finetune`` and ``curve``: the encoder, the detector, and what the labels bought."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import ConfigOpt, ManifestOpt, NoTracking, app, console, run_stage, tracking_off


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
    exclude: Annotated[
        list[Path] | None,
        typer.Option(
            help="A manifest or label CSV whose scans pretraining must not see (repeatable; pretrain.exclude). "
            "medssl run holds out its evaluation CSVs and finetune's validation part (held-out/validation.parquet)."
        ),
    ] = None,
    no_tracking: NoTracking = False,
    config: ConfigOpt = None,
) -> None:
    """Self-supervised pretraining of an encoder on the manifest's accepted (unlabeled) scans.

    Saves encoder.pt, logs the run to MLflow and registers <name>-encoder. A killed run resumes from its
    last epoch; a finished one with the same settings and data is not run again. Under torchrun each
    process takes one GPU (DistributedDataParallel).
    """
    from pipeline.pretrain import run_pretrain, summary_table

    overrides = {
        "pretrain.manifest": manifest,
        "pretrain.method": method,
        "pretrain.out": out,
        "pretrain.spatial_dims": spatial_dims,
        "pretrain.epochs": epochs,
        "pretrain.batch_size": batch_size,
        "pretrain.device": device,
        "pretrain.name": name,
        "pretrain.exclude": exclude,
        **tracking_off(no_tracking),
    }
    result = run_stage(run_pretrain, config, overrides)
    console.print(summary_table(result))


@app.command()
def finetune(
    encoder: Annotated[
        str | None,
        typer.Option(help="models:/<name>-encoder@<method>, a path to encoder.pt, or scratch (finetune.encoder)."),
    ] = None,
    manifest: ManifestOpt = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="Label CSV (path,label[,patient_id,group], or series_key,label as medssl review export writes); "
            "default: the labels stored at ingest."
        ),
    ] = None,
    exclude: Annotated[
        list[Path] | None,
        typer.Option(
            help="A manifest or label CSV of scans not to learn from, even labelled (repeatable; finetune.exclude): "
            "the scans evaluate and promote judge on. medssl run adds evaluate.labels and promote.labels."
        ),
    ] = None,
    budget: Annotated[
        str | None, typer.Option(help="Labels per class from the training part: Nshot, or P% (1%, 10%, 100%).")
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option(
            help="linear (probe), full (all weights), oneclass (normal labels only), semi (full + unlabelled scans)."
        ),
    ] = None,
    seeds: Annotated[int | None, typer.Option(help="Repeats with other label draws; mean and sd reported.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for detector.pt and finetune.json.")] = None,
    name: Annotated[str | None, typer.Option(help="Registry name prefix: <name>-detector.")] = None,
    no_tracking: NoTracking = False,
    config: ConfigOpt = None,
) -> None:
    """Few-label anomaly detection (normal vs abnormal) from an encoder, scored on held-out scans.

    The labelled scans are split into training and validation parts (stratified; a patient or
    near-duplicate group never on both sides); each repeat draws the budget from the training part. The
    first repeat's detector is registered as <name>-detector with the alias challenger.
    """
    from pipeline.finetune import run_finetune, summary_table

    overrides = {
        "finetune.encoder": encoder,
        "finetune.manifest": manifest,
        "finetune.labels": labels,
        "finetune.exclude": exclude,
        "finetune.budget": budget,
        "finetune.mode": mode,
        "finetune.seeds": seeds,
        "finetune.out": out,
        "finetune.name": name,
        **tracking_off(no_tracking),
    }
    result = run_stage(run_finetune, config, overrides)
    console.print(summary_table(result))


@app.command()
def curve(
    encoder: Annotated[
        str | None, typer.Option(help="The SSL encoder: models:/<name>-encoder@<method> or encoder.pt.")
    ] = None,
    manifest: ManifestOpt = None,
    labels: Annotated[Path | None, typer.Option(help="Label CSV (default: the labels stored at ingest).")] = None,
    budgets: Annotated[
        str | None, typer.Option(help="Comma-separated budgets, e.g. 1shot,4shot,16shot,10% (curve.budgets).")
    ] = None,
    mode: Annotated[str | None, typer.Option(help="How the SSL arm trains: linear, full, oneclass or semi.")] = None,
    seeds: Annotated[int | None, typer.Option(help="Label draws per budget and arm (mean and 95 % interval).")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for curve.json and label-efficiency.png.")
    ] = None,
    no_tracking: NoTracking = False,
    config: ConfigOpt = None,
) -> None:
    """Label efficiency: validation AUROC against the number of labels, SSL encoder against scratch.

    Each budget is fine-tuned on the SSL encoder and on the same network from random weights, over the
    same validation part; nothing is registered. Writes curve.json and label-efficiency.png.
    """
    from pipeline.curve import run_curve, summary_table

    overrides = {
        "finetune.encoder": encoder,
        "finetune.manifest": manifest,
        "finetune.labels": labels,
        "finetune.mode": mode,
        "finetune.seeds": seeds,
        "curve.budgets": [b.strip() for b in budgets.split(",") if b.strip()] if budgets else None,
        "curve.out": out,
        **tracking_off(no_tracking),
    }
    result = run_stage(run_curve, config, overrides)
    console.print(summary_table(result))
