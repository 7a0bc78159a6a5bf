"""Distillation losses, registered by name and mixed by weight.

Adding a loss means one class with ``@register_loss("name")``; a run's configuration names the mix, e.g.
``{"kd": 0.7, "ce": 0.3}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import EdgekdError


@dataclass
class LossInputs:
    student_logits: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)


class DistillLoss(nn.Module):
    needs_teacher = True

    def forward(self, batch: LossInputs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


LOSSES: dict[str, Callable[..., DistillLoss]] = {}


def register_loss(name: str) -> Callable[[type[DistillLoss]], type[DistillLoss]]:
    def deco(cls: type[DistillLoss]) -> type[DistillLoss]:
        LOSSES[name] = cls
        return cls

    return deco


@register_loss("ce")
class CrossEntropy(DistillLoss):
    """Cross-entropy on the hard labels."""

    needs_teacher = False

    def forward(self, batch: LossInputs) -> torch.Tensor:
        return F.cross_entropy(batch.student_logits, batch.labels)


@register_loss("kd")
class HintonKD(DistillLoss):
    """KL(teacher_T || student_T) * T^2 (Hinton et al., 2015): T^2 keeps gradients comparable to CE's."""

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        check_temperature(temperature)
        self.temperature = temperature

    def forward(self, batch: LossInputs) -> torch.Tensor:
        assert batch.teacher_logits is not None
        t = self.temperature
        log_p_student = F.log_softmax(batch.student_logits / t, dim=1)
        log_p_teacher = F.log_softmax(batch.teacher_logits / t, dim=1)
        return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise EdgekdError(f"temperature must be > 0, got {temperature}", "use a temperature such as 4")


class LossMix(nn.Module):
    """A weighted sum of registered losses; reports each term so the mix can be inspected."""

    def __init__(self, weights: dict[str, float], temperature: float = 4.0) -> None:
        super().__init__()
        unknown = [n for n in weights if n not in LOSSES]
        if unknown:
            raise EdgekdError(
                f"unknown loss {', '.join(map(repr, unknown))}", f"registered losses: {', '.join(sorted(LOSSES))}"
            )
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise EdgekdError(f"loss weights must be >= 0 and sum to > 0, got {weights}", "e.g. kd=0.7,ce=0.3")
        self.weights = {n: float(w) for n, w in weights.items() if w > 0}
        self.terms = nn.ModuleDict(
            {n: (LOSSES[n](temperature=temperature) if n == "kd" else LOSSES[n]()) for n in self.weights}
        )

    @property
    def needs_teacher(self) -> bool:
        return any(term.needs_teacher for term in self.terms.values())

    def forward(self, batch: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
        total = batch.student_logits.new_zeros(())
        parts = {}
        for name, term in self.terms.items():
            value = term(batch)
            parts[name] = float(value.detach())
            total = total + self.weights[name] * value
        return total, parts
