"""The one module that talks to MLflow: where runs go, what a stage logs, and dataset lineage."""

from __future__ import annotations

import contextlib
import hashlib
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


def _active() -> Any:
    """The mlflow module when a run is active, else None; never imports mlflow (1.5 s) just to find out."""
    mlflow = sys.modules.get("mlflow")
    return mlflow if mlflow is not None and mlflow.active_run() is not None else None


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    if (mlflow := _active()) is not None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_table_input(df: Any, source: Path, name: str, context: str) -> str | None:
    """Log a table (the manifest) as a dataset input of the active run; returns its digest for lineage. An
    empty table (a nightly batch with nothing new) is not a dataset: MLflow's digest fails on it."""
    if (mlflow := _active()) is None or len(df) == 0:
        return None
    with warnings.catch_warnings():  # schema-inference hints about nullable ints do not apply to a manifest
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(df, source=str(source), name=name)
        mlflow.log_input(dataset, context=context)
    return dataset.digest


def log_artifact(path: Path) -> None:
    if (mlflow := _active()) is not None:
        mlflow.log_artifact(str(path))


def _pinned(packages: tuple[str, ...]) -> list[str]:
    """Requirements pinned from this environment rather than inferred (inference is slow and noisy)."""
    import importlib.metadata as md

    return [f"{pkg}=={md.version(pkg).split('+')[0]}" for pkg in packages]


def _register(mlflow: Any, info: Any, name: str, register: bool, tags: dict[str, str], alias: str | None) -> str:
    """The logged model's URI; with ``register``, its version gets ``tags`` and ``alias``."""
    if not register:
        return info.model_uri
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return f"models:/{name}/{version}"


def log_model(
    module: Any, example: Any, name: str, register: bool, tags: dict[str, str], alias: str | None = None
) -> str | None:
    """Log an encoder (images -> features) as an MLflow PyTorch model and, with ``register``, register it as
    ``name`` with ``tags`` on the version and ``alias`` pointing at it. Returns the URI to load it by.

    The module is pickled with the ``models`` package as code, so it loads wherever torch and MONAI are
    installed.
    """
    if (mlflow := _active()) is None:
        return None
    import torch
    from mlflow.models import infer_signature

    import models

    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # pickle is chosen: the encoder must stay trainable
    module.eval()
    with torch.no_grad():
        features = module(torch.as_tensor(example)).numpy()
    info = mlflow.pytorch.log_model(
        module,
        name="encoder",
        serialization_format="pickle",
        code_paths=[str(Path(models.__file__).parent)],
        signature=infer_signature(example, features),
        pip_requirements=_pinned(("torch", "monai", "einops", "numpy")),
        registered_model_name=name if register else None,
        tags=tags,
    )
    return _register(mlflow, info, name, register, tags, alias)


def log_scorer(detector: Path, name: str, register: bool, tags: dict[str, str], alias: str | None = None) -> str | None:
    """Log a saved detector as a ``pipeline.scorer.DetectorScorer`` pyfunc model (image paths or arrays in,
    scores out; logged from code, ``pipeline/scorer_model.py``) and register it like ``log_model``. It
    carries the ``pipeline`` and ``models`` packages as code. No signature: it takes paths or arrays, which
    one schema cannot describe."""
    if (mlflow := _active()) is None:
        return None
    import models
    import pipeline

    info = mlflow.pyfunc.log_model(
        name="detector",
        python_model=str(Path(pipeline.__file__).parent / "scorer_model.py"),
        artifacts={"detector": str(detector)},
        code_paths=[str(Path(pipeline.__file__).parent), str(Path(models.__file__).parent)],
        pip_requirements=_pinned(("torch", "monai", "einops", "numpy", "nibabel", "pillow", "pandas", "mlflow")),
        registered_model_name=name if register else None,
        tags=tags,
    )
    return _register(mlflow, info, name, register, tags, alias)


def pin_model(ref: str, cfg: TrackingConfig) -> tuple[str, str, str]:
    """(model name, version, a reference to exactly that version): an alias or ``latest`` is resolved to its
    number now, a file is named by its content digest, a ``runs:/`` URI is one already. What a run reads
    from a moving reference is then the version it recorded, and a later run of the same reference can tell
    that it now means another model."""
    if ":/" not in ref:
        path = Path(ref)
        if not path.is_file():
            raise FileNotFoundError(f"model not found: {ref} (give models:/..., runs:/... or a .pt path)")
        return path.name, hashlib.sha256(path.read_bytes()).hexdigest()[:12], ref
    if not ref.startswith("models:/"):
        return ref, "", ref
    name, _, alias = ref.removeprefix("models:/").partition("@")
    if not alias:
        name, _, version = name.partition("/")
        if version != "latest":
            return name, version, ref
    version = alias_version(name, alias, cfg) if alias else _latest_version(name, cfg)
    if version is None:
        raise FileNotFoundError(f"model not found: {ref} (no such registered model or alias)")
    return name, version, f"models:/{name}/{version}"


def _latest_version(name: str, cfg: TrackingConfig) -> str | None:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cfg))
    versions = [int(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name = '{name}'")]
    return str(max(versions)) if versions else None


def load_model(ref: str, cfg: TrackingConfig) -> tuple[Any, dict[str, str]]:
    """A PyTorch module by MLflow URI (``models:/name@alias``, ``models:/name/3``, ``runs:/...``) or file path
    (a ``torch.save``d module), and for a registered version its tags (what it was trained on, how to feed it).
    """
    if ":/" not in ref:
        import torch

        if not Path(ref).is_file():
            raise FileNotFoundError(f"model not found: {ref} (give models:/..., runs:/... or a .pt path)")
        return torch.load(ref, map_location="cpu", weights_only=False), {}
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri(cfg))
    try:
        return _load_logged(mlflow, ref)
    except MlflowException as exc:
        # No such model, version or alias (a missing alias is an invalid parameter to MLflow): the user's to
        # fix, so the caller's one-line error. Anything else (the server down) stays an exception.
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise FileNotFoundError(f"model not found: {ref} ({exc.message.splitlines()[0]})") from None


def _load_logged(mlflow: Any, uri: str) -> tuple[Any, dict[str, str]]:
    flavors = mlflow.models.get_model_info(uri).flavors
    if "pytorch" in flavors:
        module = mlflow.pytorch.load_model(uri)
    else:  # a DetectorScorer: the torch module it wraps
        module = mlflow.pyfunc.load_model(uri).unwrap_python_model().detector
    tags: dict[str, str] = {}
    if uri.startswith("models:/"):
        name, _, ref = uri.removeprefix("models:/").partition("@")
        client = mlflow.MlflowClient()
        if ref:
            version = client.get_model_version_by_alias(name, ref)
        else:
            name, _, number = name.partition("/")
            version = client.get_model_version(name, number)
        tags = dict(version.tags)
    return module, tags


def alias_version(name: str, alias: str, cfg: TrackingConfig) -> str | None:
    """The version of registered model ``name`` that ``alias`` points at, or None (no model, no alias).

    Only an absent model or alias is None: promote reads None as "no champion yet", so a registry that
    fails to answer must raise rather than look empty."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri(cfg))
    try:
        model = mlflow.MlflowClient().get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = model.aliases.get(alias)
    return None if version is None else str(version)


def set_alias(name: str, alias: str, version: str, cfg: TrackingConfig) -> None:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cfg))
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
