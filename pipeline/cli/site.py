"""``medssl suggest``, ``shift`` and ``adapt``: what to label next, and how far a new site is from the old."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import ConfigOpt, ManifestOpt, app, console, run_stage


@app.command()
def suggest(
    encoder: Annotated[
        str | None, typer.Option(help="Encoder URI or encoder.pt whose embeddings measure diversity.")
    ] = None,
    manifest: ManifestOpt = None,
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
    from pipeline.suggest import run_suggest

    overrides = {
        "suggest.encoder": encoder,
        "suggest.manifest": manifest,
        "suggest.n": n,
        "suggest.labels": labels,
        "suggest.detector": detector,
        "suggest.out": out,
    }
    result = run_stage(run_suggest, config, overrides)
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
    from pipeline.adapt import run_shift, shift_table

    overrides = {
        "shift.reference": reference,
        "shift.target": target,
        "shift.encoder": encoder,
        "shift.out": out,
    }
    result = run_stage(run_shift, config, overrides)
    console.print(shift_table(result))
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
    from pipeline.adapt import run_adapt, summary_table

    overrides = {
        "adapt.model": model,
        "adapt.target": target,
        "adapt.method": method,
        "adapt.out": out,
        "adapt.name": name,
    }
    result = run_stage(run_adapt, config, overrides)
    console.print(summary_table(result))
