"""Training state on disk, for every fit that must survive being killed (pretraining, semi-supervised
fine-tuning): one atomic write of each part's ``state_dict`` and of the plain values a stage needs to tell
its own checkpoint from another run's (a fingerprint, the epoch, an MLflow run id)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from pipeline.atomic import atomic_path


class Stateful(Protocol):
    """What torch's modules, optimisers, schedulers and grad scalers have in common."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any], /) -> Any: ...


def save_state(path: Path, parts: Mapping[str, Stateful | None], **values: Any) -> None:
    """Write ``parts`` (None: a part this fit does not have) and ``values`` atomically: a kill mid-write
    leaves the previous checkpoint whole."""
    state = {**values, **{name: None if part is None else part.state_dict() for name, part in parts.items()}}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_state(path: Path) -> dict[str, Any]:
    """The saved state (tensors on the CPU), to check its values before restoring it."""
    return torch.load(path, map_location="cpu", weights_only=True)


def restore_state(state: Mapping[str, Any], parts: Mapping[str, Stateful | None]) -> None:
    """Load each part present both here and in ``state`` in place."""
    for name, part in parts.items():
        if part is not None and state.get(name) is not None:
            part.load_state_dict(state[name])
