"""DINO: self-distillation with no labels and no negatives; a momentum teacher, centring and sharpening.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021. The teacher shares
the momentum machinery with MoCo's key encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.distributed import mean_across_ranks
from models.momentum import MomentumPair


class DinoHead(nn.Module):
    """MLP, L2-normalised bottleneck, then a linear layer onto ``out_dim`` prototypes."""

    def __init__(self, in_dim: int, hidden_dim: int = 512, bottleneck_dim: int = 128, out_dim: int = 1024) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        self.last = nn.Linear(bottleneck_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(F.normalize(self.mlp(x), dim=-1))


def distillation_loss(
    teacher: torch.Tensor, student: torch.Tensor, center: torch.Tensor, teacher_temp: float, student_temp: float
) -> torch.Tensor:
    """Cross-entropy from the centred, sharpened teacher distribution to the student's."""
    target = F.softmax((teacher - center) / teacher_temp, dim=-1)
    return -(target * F.log_softmax(student / student_temp, dim=-1)).sum(dim=-1).mean()


class DINO(MomentumPair):
    """``forward(view_a, view_b)``: each view's student predicts the other view's teacher output."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        head_hidden: int = 512,
        bottleneck_dim: int = 128,
        out_dim: int = 1024,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_fraction: float = 0.3,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
    ) -> None:
        super().__init__(encoder, DinoHead(feature_dim, head_hidden, bottleneck_dim, out_dim), momentum)
        self.final_teacher_temp, self.warmup_teacher_temp = teacher_temp, warmup_teacher_temp
        self.warmup_fraction, self.teacher_temp = warmup_fraction, warmup_teacher_temp
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def set_progress(self, fraction: float) -> None:
        """Momentum schedule, and the teacher temperature's linear warm-up: a cold teacher early keeps
        centring from flattening its output before the student has learned anything."""
        super().set_progress(fraction)
        ramp = min(1.0, fraction / self.warmup_fraction) if self.warmup_fraction > 0 else 1.0
        self.teacher_temp = self.warmup_teacher_temp + ramp * (self.final_teacher_temp - self.warmup_teacher_temp)

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """``index`` unused: self-distillation has no negatives to keep an image out of."""
        student_a, student_b = self.online(view_a), self.online(view_b)
        with torch.no_grad():
            teacher_a, teacher_b = self.target(view_a), self.target(view_b)
        temps = (self.teacher_temp, self.student_temp)
        loss = 0.5 * (
            distillation_loss(teacher_a, student_b, self.center, *temps)
            + distillation_loss(teacher_b, student_a, self.center, *temps)
        )
        self._update_center(torch.cat([teacher_a, teacher_b]))
        return loss

    @torch.no_grad()
    def _update_center(self, teacher: torch.Tensor) -> None:
        batch_mean = mean_across_ranks(teacher.mean(dim=0, keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_mean, alpha=1 - self.center_momentum)
