"""The ``medssl`` command line: thin wrappers that build a config and call one stage function each."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.cluster import ClusterError
from pipeline.config import ConfigError, load_config
from pipeline.labels import LabelsError

app = typer.Typer(
    help="medssl: turn an archive of unlabeled scans into a few-label anomaly detector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (see configs/default.yaml).")]


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


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
        list[Path] | None, typer.Option("--labels", help="Label CSV for PNG/JPEG inputs (repeatable).")
    ] = None,
    tilt: Annotated[str | None, typer.Option(help="Gantry tilt: reject, raw or resample.")] = None,
    nonuniform_spacing: Annotated[str | None, typer.Option(help="Uneven slice gaps: reject, raw or resample.")] = None,
    compress: Annotated[
        bool | None, typer.Option("--compress/--no-compress", help="Write .nii.gz (default) or .nii.")
    ] = None,
    site: Annotated[str | None, typer.Option(help="Site name recorded in the manifest.")] = None,
    no_tracking: Annotated[bool, typer.Option("--no-tracking", help="Do not log to MLflow.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Convert DICOM series and 2D images to NIfTI plus manifest.parquet, rejecting what cannot be stacked.

    Re-running over the same sources converts only what is new or changed; a killed run resumes.
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
        "dask.workers": workers,
        "dask.scheduler": scheduler,
        "tracking.enabled": False if no_tracking else None,
    }
    try:
        cfg = load_config(config, overrides)
        result = run_ingest(cfg, console)
    except (ConfigError, LabelsError, IngestError, ClusterError) as exc:
        raise _fail(str(exc)) from None
    console.print(summary_table(result))
    if result.converted == 0:
        console.print(f"Nothing new to convert: all {result.unchanged} series/images are up to date.")


if __name__ == "__main__":
    app()
