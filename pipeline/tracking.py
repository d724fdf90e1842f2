"""MLflow runs: where they go, what a stage logs (params, metrics, artifacts), and dataset lineage.

Models are logged, registered and loaded by ``pipeline.registry.store``, which shares this module's tracking URI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.config import Config, TrackingConfig, flat_params

DEFAULT_URI = "sqlite:///mlflow.db"


def tracking_uri(cfg: TrackingConfig) -> str:
    return cfg.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


@contextlib.contextmanager
def stage_run(
    config: Config, stage: str, tags: dict[str, str] | None = None, run_id: str | None = None
) -> Iterator[Any]:
    """Open an MLflow run for one stage, with the resolved config as params; yields None when disabled.

    ``run_id`` reopens the run of an interrupted stage, so a resumed run keeps one history of metrics.
    """
    if not config.tracking.enabled:
        yield None
        return
    import mlflow

    for name in ("mlflow", "alembic"):  # their INFO lines (table creation, new experiment) are noise here
        logging.getLogger(name).setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri(config.tracking))
    mlflow.set_experiment(config.tracking.experiment)
    nested = mlflow.active_run() is not None
    with mlflow.start_run(
        run_id=run_id, run_name=None if run_id else stage, nested=nested, tags={"medssl.stage": stage, **(tags or {})}
    ) as run:
        params = flat_params(config)
        if run_id:
            # MLflow refuses to change a logged param; a resumed run may differ in settings that do not
            # change training (device, cache, monitor), so those new values are kept as tags.
            logged = mlflow.get_run(run_id).data.params
            changed = {f"medssl.resumed.{k}": v for k, v in params.items() if k in logged and logged[k] != v}
            mlflow.set_tags(changed)
            params = {k: v for k, v in params.items() if k not in logged}
        items = list(params.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i : i + 100]))
        yield run


def find_run(config: Config, stage: str, tag: str, value: str) -> str | None:
    """The id of the latest run of ``stage`` tagged ``tag=value`` in the configured experiment, if any: how
    a stage finds the run that made its input when the two ran in different processes (Airflow tasks)."""
    if not config.tracking.enabled:
        return None
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(config.tracking))
    found = mlflow.search_runs(
        experiment_names=[config.tracking.experiment],
        filter_string=f"tags.`medssl.stage` = '{stage}' and tags.`{tag}` = '{value}'",
        order_by=["start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return found[0].info.run_id if found else None


def active_run_module() -> Any:
    """The mlflow module when a run is active, else None; never imports mlflow (1.5 s) just to find out."""
    mlflow = sys.modules.get("mlflow")
    return mlflow if mlflow is not None and mlflow.active_run() is not None else None


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    if (mlflow := active_run_module()) is not None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_table_input(df: Any, source: Path, name: str, context: str) -> str | None:
    """Log a table (the manifest) as a dataset input of the active run; returns its digest for lineage. An
    empty table (a nightly batch with nothing new) is not a dataset: MLflow's digest fails on it."""
    if (mlflow := active_run_module()) is None or len(df) == 0:
        return None
    with warnings.catch_warnings():  # schema-inference hints about nullable ints do not apply to a manifest
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(df, source=str(source), name=name)
        mlflow.log_input(dataset, context=context)
    return dataset.digest


def log_artifact(path: Path) -> None:
    if (mlflow := active_run_module()) is not None:
        mlflow.log_artifact(str(path))
