"""The pieces every section of the config shares: strict models, the device choice, budgets, names, views."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from pipeline.data.budget import Budget
from pipeline.data.presets import view_preset

# auto: CUDA when visible, else the CPU (pipeline.device resolves it, one GPU per torchrun rank).
Device = Literal["auto", "cpu", "cuda"]
# A label budget: Nshot or P% (0 < P <= 100), parsed by the one ``Budget.parse``.
BudgetSpec = Annotated[str, AfterValidator(lambda spec: Budget.parse(spec) and spec)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class Strict(BaseModel):
    """Unknown keys are errors, and assignments are checked as loading is."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ViewConfig(Strict):
    """A random view recipe; where one is expected, a modality preset's name may stand for it (``views: us``)."""

    crop_min: float = Field(default=0.5, gt=0, le=1)
    flip_axes: list[int] = Field(default_factory=lambda: [0])
    intensity: float = Field(default=1.0, ge=0, le=1)


Views = Annotated[ViewConfig, BeforeValidator(view_preset)]
