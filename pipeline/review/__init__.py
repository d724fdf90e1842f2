"""The review stage: the radiologist's page over an ingest output (``medssl review``), and the label CSV
its decisions add up to (``medssl review export``).

``review_app`` builds the Starlette app from the config alone, so the CLI, a test or another ASGI server
serve the same thing; ``run_review`` serves it with uvicorn on the configured loopback address.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from starlette.applications import Starlette

from pipeline.config import Config
from pipeline.errors import ReviewError
from pipeline.pseudonym import read_key
from pipeline.review.app import State, build_app
from pipeline.review.auth import Readers
from pipeline.review.export import ExportResult, export_labels
from pipeline.review.render import Renderer
from pipeline.review.store import open_database
from pipeline.review.unpacked import Unpacked
from pipeline.review.worklists import catalogue

__all__ = ["ExportResult", "review_app", "run_review", "run_review_export"]


def _folder(config: Config) -> Path:
    if config.review.manifest is None:
        raise ReviewError("no manifest given: set review.manifest (an ingest manifest.parquet)")
    if not config.review.manifest.is_file():
        raise ReviewError(f"{config.review.manifest}: no such manifest")
    return config.review.manifest.parent


def _database(config: Config) -> str:
    if config.review.database is not None:
        return config.review.database.get_secret_value()
    folder = _folder(config) / "review"
    folder.mkdir(exist_ok=True)
    return f"sqlite:///{folder / 'review.db'}"


def _export_to(config: Config) -> Path:
    return config.review.out or _folder(config) / "review" / "labels.csv"


def _unpacked(config: Config) -> Unpacked | None:
    if config.review.unpacked_gb == 0:
        return None
    folder = config.review.unpacked or _folder(config) / "review" / "unpacked"
    return Unpacked(folder, int(config.review.unpacked_gb * 1e9))


def review_app(config: Config) -> Starlette:
    cfg = config.review
    folder = _folder(config)
    key = read_key(config.ingest.secret(), folder)
    if key is None:
        raise ReviewError(f"{folder}: no pseudonym key (set ingest.pseudonym_key or MEDSSL_PSEUDONYM_KEY as at ingest)")
    readers = cfg.all_readers()
    if not readers:
        raise ReviewError("no readers: list them under review.readers or in $MEDSSL_REVIEW_TOKENS")
    scores = cfg.scores or (folder / "scores.csv" if (folder / "scores.csv").is_file() else None)
    cat = catalogue(cfg.manifest, cfg.suggested, scores, key)
    state = State(
        config,
        open_database(_database(config)),
        Readers(readers, key),
        cat,
        Renderer(cat.files, cfg.cache_scans, _unpacked(config)),
        _export_to(config),
    )
    return build_app(state)


def run_review(config: Config, console: Console) -> None:
    import uvicorn

    app = review_app(config)
    console.print(f"review: http://{config.review.host}:{config.review.port}/ (Ctrl-C stops it)")
    uvicorn.run(app, host=config.review.host, port=config.review.port, log_level="warning")


def run_review_export(config: Config, console: Console) -> ExportResult:
    """The labels of ``review.database`` into ``review.out``; the manifest is needed only for the defaults of
    the two (beside it), so a pipeline run that names both exports without one."""
    return export_labels(config, open_database(_database(config)), _export_to(config))
