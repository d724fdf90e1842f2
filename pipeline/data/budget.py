"""A label budget: how many labelled scans of each class a run may use, and the draw of those scans.

Written once here: the config checks a budget with ``Budget.parse`` (``finetune.budget``, ``curve.budgets``),
and fine-tuning draws with ``draw``, so a budget the config accepts is always one a run can draw.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # items pulls in MONAI; the config reads budgets without it
    from pipeline.data.items import Item


@dataclass(frozen=True)
class Budget:
    """``shots`` scans per class, or a ``fraction`` of each class's scans."""

    shots: int | None = None
    fraction: float | None = None

    @classmethod
    def parse(cls, spec: str) -> Budget:
        if m := re.fullmatch(r"(\d+)shot", spec):
            return cls(shots=int(m[1]))
        if (m := re.fullmatch(r"(\d+(?:\.\d+)?)%", spec)) and 0 < float(m[1]) <= 100:
            return cls(fraction=float(m[1]) / 100)
        raise ValueError(f"budget must be Nshot or P% (0 < P <= 100), got {spec!r}")  # the config names the key

    def count(self, available: int) -> int:
        """Scans to draw from ``available`` of one class: at least one, at most all."""
        wanted = self.shots if self.shots is not None else round(available * (self.fraction or 0))
        return min(available, max(1, wanted))


def by_content(found: Sequence[Item]) -> list[str]:
    """The scans of ``found`` in the order of their content (voxel digest), so that a seeded draw from them
    picks the same images whatever pseudonym key named the scans."""
    content = {it["scan"]: it["voxels"] for it in found}
    return sorted(content, key=lambda scan: (content[scan], scan))


def draw(train: Sequence[Item], budget: Budget, seed: int, classes: tuple[int, ...] = (0, 1)) -> list[Item]:
    """The items of the scans a budget allows, drawn at random per class from the training part."""
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for label in classes:
        pool = by_content([it for it in train if it["label"] == label])
        chosen.update(rng.choice(pool, size=budget.count(len(pool)), replace=False).tolist())
    return [it for it in train if it["scan"] in chosen]
