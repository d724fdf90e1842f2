"""``medssl review`` (serve the radiologist's page) and ``medssl review export`` (its labels as a CSV)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import ConfigOpt, app, console, run_stage

review_app = typer.Typer(help="The radiologist's page: worklists, viewer, decisions, agreement, export.")
app.add_typer(review_app, name="review")


@review_app.callback(invoke_without_command=True)
def review(
    ctx: typer.Context,
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1: this machine only).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
    suggested: Annotated[
        Path | None, typer.Option(help="A medssl suggest CSV: the 'to label' worklist (review.suggested).")
    ] = None,
) -> None:
    """Serve the page over review.manifest until Ctrl-C; readers sign in with their review.readers token."""
    if ctx.invoked_subcommand is not None:
        return
    from pipeline.review import run_review

    run_stage(run_review, config, {"review.host": host, "review.port": port, "review.suggested": suggested})


@review_app.command("export")
def export(
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Label CSV to write (series_key,label).")] = None,
) -> None:
    """Write the adjudicated or agreed label of each decided scan (1 = abnormal) as finetune --labels reads it."""
    from pipeline.review import run_review_export

    result = run_stage(run_review_export, config, {"review.out": out})
    console.print(
        f"Written: {result.out} ({result.normal} normal, {result.abnormal} abnormal, {result.readers} readers)"
    )
