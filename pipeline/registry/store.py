"""The model registry: the one place models are logged, registered, named by aliases, pinned and loaded.

Aliases are the registry's vocabulary (never the deprecated stages):

- ``<name>-encoder@<method>``: the archive's SSL encoder of each method (``@<method>-adapted`` after
  continued pretraining on a new site);
- ``<name>-detector@challenger``: the newest detector (finetune, adapt);
- ``<name>-detector@champion``: the one that scores new studies, moved only by the promotion gate.

A reference is a registry URI (``models:/name@alias``, ``models:/name/3``), a run's (``runs:/...``) or a
``torch.save``d file. A reference that names nothing is a ``RegistryError``, whichever stage asked.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from pipeline.config import TrackingConfig
from pipeline.errors import RegistryError
from pipeline.tracking import active_run_module, tracking_uri

CHAMPION, CHALLENGER = "champion", "challenger"
ADAPTED = "-adapted"  # suffix of an encoder alias after continued pretraining (``@<method>-adapted``)


def encoder_name(prefix: str) -> str:
    return f"{prefix}-encoder"


def detector_name(prefix: str) -> str:
    return f"{prefix}-detector"


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
    if (mlflow := active_run_module()) is None:
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


def log_detector(
    detector: Path, name: str, register: bool, tags: dict[str, str], alias: str | None = None
) -> str | None:
    """Log a saved detector as the served pyfunc model, ``pipeline.registry.pyfunc.ServedDetector`` (image
    paths or arrays in, scores out; logged from code, ``pipeline/registry/pyfunc_code.py``), and register it
    like ``log_model``. It
    carries the ``pipeline`` and ``models`` packages as code. No signature: it takes paths or arrays, which
    one schema cannot describe."""
    if (mlflow := active_run_module()) is None:
        return None
    import models
    import pipeline

    info = mlflow.pyfunc.log_model(
        name="detector",
        python_model=str(Path(__file__).with_name("pyfunc_code.py")),
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
            raise RegistryError(f"model not found: {ref} (give models:/..., runs:/... or a .pt path)")
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
        raise RegistryError(f"model not found: {ref} (no such registered model or alias)")
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
            raise RegistryError(f"model not found: {ref} (give models:/..., runs:/... or a .pt path)")
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
        raise RegistryError(f"model not found: {ref} ({exc.message.splitlines()[0]})") from None


def _load_logged(mlflow: Any, uri: str) -> tuple[Any, dict[str, str]]:
    flavors = mlflow.models.get_model_info(uri).flavors
    if "pytorch" in flavors:
        module = mlflow.pytorch.load_model(uri)
    else:  # a ServedDetector: the torch module it wraps
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
