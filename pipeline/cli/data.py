"""``medssl ingest`` (DICOM series, 2D images and PACS studies into volumes and a manifest) and ``medssl listen``
(the C-STORE receiver that files studies for the daily batch)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import ConfigOpt, NoTracking, app, console, run_stage, tracking_off


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
    header_backend: Annotated[
        str | None,
        typer.Option(
            help="Header parser: auto (dicomsdl when installed), dicomsdl (fast, C++) or pydicom (the reference); "
            "files the fast one fails on are read again with pydicom."
        ),
    ] = None,
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
    dicomweb_auth: Annotated[
        str | None,
        typer.Option(
            metavar="none|basic|bearer",
            help="With --dicomweb: the login the server wants. basic reads $MEDSSL_DICOMWEB_USER and "
            "$MEDSSL_DICOMWEB_PASSWORD, bearer $MEDSSL_DICOMWEB_TOKEN (names set in ingest.dicomweb.auth), "
            "unless --dicomweb-credentials is given.",
        ),
    ] = None,
    dicomweb_credentials: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="With --dicomweb-auth: read the login from FILE instead (mode 600; one line, user:password "
            "or the token).",
        ),
    ] = None,
    no_tracking: NoTracking = False,
    config: ConfigOpt = None,
) -> None:
    """Convert DICOM series and 2D images to NIfTI plus manifest.parquet, rejecting what cannot be stacked.

    Re-running over the same sources converts only what is new or changed; a killed run resumes. With
    --dicomweb, studies not fetched before are first retrieved from the PACS (a killed pull resumes too);
    a login is read from the environment or a mode-600 file, never from the command line or the config.
    """
    from pipeline.ingest import run_ingest, summary_table

    overrides = {
        "ingest.sources": sources,
        "ingest.out": out,
        "ingest.labels": labels,
        "ingest.tilt": tilt,
        "ingest.nonuniform_spacing": nonuniform_spacing,
        "ingest.compress": compress,
        "ingest.site": site,
        "ingest.header_backend": header_backend,
        "ingest.dicomweb.url": dicomweb,
        "ingest.dicomweb.since": since.date() if since else None,
        "ingest.dicomweb.until": until.date() if until else None,
        "ingest.dicomweb.auth.method": dicomweb_auth,
        "ingest.dicomweb.auth.file": dicomweb_credentials,
        "dask.workers": workers,
        "dask.scheduler": scheduler,
        **tracking_off(no_tracking),
    }
    result = run_stage(run_ingest, config, overrides)
    console.print(summary_table(result))
    if result.converted == 0:
        console.print(f"Nothing new to convert: all {result.unchanged} series/images are up to date.")


@app.command()
def listen(
    config: ConfigOpt = None,
    ae_title: Annotated[
        str | None, typer.Option("--ae-title", help="This node's AE title, as the PACS names it (listen.ae_title).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port to listen on (listen.port, default 11112).")] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (listen.host, default 127.0.0.1: this machine only).")
    ] = None,
) -> None:
    """Receive DICOM studies by C-STORE (a PACS routing rule, a modality) until Ctrl-C or SIGTERM.

    Each image instance is written whole, atomically, into schedule.incoming/YYYY-MM-DD/ (the UTC day its
    association began), the folder the daily DAG ingests, under keyed-hash names; a re-sent instance replaces
    its copy. Answers C-ECHO; refuses calling AE titles not in listen.allowed_aes when that list is set, and
    non-image objects or transfer syntaxes ingest cannot decode. Logs the calling AE and its counts, never
    an identifier. Needs schedule.incoming, and schedule.root (or ingest.out) for the archive's pseudonym key.
    """
    from pipeline.listen import run_listen

    result = run_stage(run_listen, config, {"listen.ae_title": ae_title, "listen.port": port, "listen.host": host})
    console.print(
        f"listen stopped: {result.associations} associations ({result.refused} refused), "
        f"{result.received} instances received, {result.failed} failed"
    )
