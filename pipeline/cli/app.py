"""The ``medssl`` app: one config from file and flags, one stage function per command, one error line.

Commands live in ``data`` (ingest), ``train`` (pretrain, finetune, curve), ``site`` (suggest, shift, adapt)
``ship`` (evaluate, promote, score, run) and ``review`` (the radiologist's page); each builds its overrides
and calls ``run_stage``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from pipeline.config import Config, load_config
from pipeline.errors import MedsslError

app = typer.Typer(
    help="medssl: turn an archive of unlabeled scans into a few-label anomaly detector.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
T = TypeVar("T")
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (see configs/default.yaml).")]
NoTracking = Annotated[bool, typer.Option("--no-tracking", help="Do not log to MLflow.")]
ManifestOpt = Annotated[
    Path | None, typer.Option("--manifest", "-m", help="Ingest manifest.parquet of the scans (the stage's manifest).")
]


def tracking_off(no_tracking: bool) -> dict[str, Any]:
    """The override ``--no-tracking`` makes (none when it is not given: the config decides)."""
    return {"tracking.enabled": False} if no_tracking else {}


def run_stage(stage: Callable[[Config, Console], T], config: Path | None, overrides: dict[str, Any]) -> T:
    """Config file, then flags, then the stage; an error the user can fix is one line and exit code 2."""
    try:
        return stage(load_config(config, overrides), console)
    except MedsslError as exc:
        console.print(f"[bold red]error[/] ({exc.stage}): {exc.message}", highlight=False)
        raise typer.Exit(code=2) from None


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
