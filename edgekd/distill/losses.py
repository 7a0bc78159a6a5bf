"""Distillation losses, registered by name and mixed by weight.

Adding a loss means one class with ``@register_loss("name")`` in a small module of its family (``dkd.py``,
``hints.py``, ``attention.py``, ``rkd.py``); a run's configuration names the mix, e.g. ``{"kd": 0.7, "ce": 0.3}``,
plus per-loss options such as ``{"hint": {"student": "features", "teacher": "features"}}`` (plain dicts, so the
whole mix is YAML-able and lands verbatim in the report).

Feature losses declare which modules they need (``feature_pairs``); the trainer taps them with forward hooks
(``taps.py``) and calls ``setup`` once with the tapped shapes, so adapters are created *before* the optimizer is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import EdgekdError

DEFAULT_FEATURE_PATH = "features"  # every shipped family (students and teachers) names its trunk `features`


@dataclass
class LossInputs:
    student_logits: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    student_features: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_features: dict[str, torch.Tensor] = field(default_factory=dict)
    temperature: float | None = None  # the mix's current (possibly scheduled) temperature
    soft_labels: torch.Tensor | None = None  # mixed one-hot targets under mixup/cutmix (distill/augment.py)


class DistillLoss(nn.Module):
    """One term of the mix. ``needs_teacher``: whether it reads teacher outputs at all."""

    needs_teacher = True

    def feature_pairs(self) -> list[tuple[str, str]]:
        """(student path, teacher path) pairs this loss reads; empty for logit-only losses."""
        return []

    def setup(self, student_shapes: dict[str, torch.Size], teacher_shapes: dict[str, torch.Size]) -> None:
        """Create parameters that depend on tapped shapes (adapters). Called once, before the optimizer."""

    def forward(self, batch: LossInputs) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


LOSSES: dict[str, Callable[..., DistillLoss]] = {}


def register_loss(name: str) -> Callable[[type[DistillLoss]], type[DistillLoss]]:
    def deco(cls: type[DistillLoss]) -> type[DistillLoss]:
        LOSSES[name] = cls
        cls.registered_name = name
        return cls

    return deco


def check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise EdgekdError(f"temperature must be > 0, got {temperature}", "use a temperature such as 4")


def feature_pairs_from(student: str | list[str], teacher: str | list[str], loss: str) -> list[tuple[str, str]]:
    """Normalise ``student``/``teacher`` options (one path or equal-length lists of paths) into pairs."""
    s = [student] if isinstance(student, str) else list(student)
    t = [teacher] if isinstance(teacher, str) else list(teacher)
    if len(t) == 1 and len(s) > 1:
        t = t * len(s)
    if len(s) != len(t) or not s:
        raise EdgekdError(f"loss '{loss}': {len(s)} student feature paths but {len(t)} teacher paths",
                          "give one teacher path per student path")
    return list(zip(s, t, strict=True))


class PairedFeatureLoss(DistillLoss):
    """A feature loss: the mean over its (student path, teacher path) pairs of one pair's term (``pair_loss``).
    ``hint``, ``at`` and the TinyBERT losses differ only in that term, so the pairing and averaging live here."""

    registered_name: str

    def __init__(self, student: str | list[str], teacher: str | list[str]) -> None:
        super().__init__()
        self.pairs = feature_pairs_from(student, teacher, self.registered_name)

    def feature_pairs(self) -> list[tuple[str, str]]:
        return self.pairs

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """The term of pair ``index``: student features ``s`` against teacher features ``t``."""
        raise NotImplementedError

    def forward(self, batch: LossInputs) -> torch.Tensor:
        total = batch.student_logits.new_zeros((), dtype=torch.float32)
        for index, (s_path, t_path) in enumerate(self.pairs):
            total = total + self.pair_loss(index, batch.student_features[s_path], batch.teacher_features[t_path])
        return total / len(self.pairs)


@register_loss("ce")
class CrossEntropy(DistillLoss):
    """Cross-entropy on the hard labels (what the student alone trains on)."""

    needs_teacher = False

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, batch: LossInputs) -> torch.Tensor:
        target = batch.labels if batch.soft_labels is None else batch.soft_labels
        return F.cross_entropy(batch.student_logits, target, label_smoothing=self.label_smoothing)


def temperature_of(own: float | None, batch: LossInputs) -> float:
    t = own if own is not None else batch.temperature
    return 4.0 if t is None else t


@register_loss("kd")
class HintonKD(DistillLoss):
    """KL(teacher_T || student_T) * T^2 (Hinton et al., 2015): T^2 keeps gradients comparable to CE's.

    ``temperature=None`` follows the mix's (scheduled) temperature; a number pins this term's own.
    """

    def __init__(self, temperature: float | None = None) -> None:
        super().__init__()
        if temperature is not None:
            check_temperature(temperature)
        self.temperature = temperature

    def forward(self, batch: LossInputs) -> torch.Tensor:
        assert batch.teacher_logits is not None
        t = temperature_of(self.temperature, batch)
        log_p_student = F.log_softmax(batch.student_logits / t, dim=1)
        log_p_teacher = F.log_softmax(batch.teacher_logits.float() / t, dim=1)
        return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)


def _accepted_options(cls: Callable[..., DistillLoss]) -> list[str]:
    params = inspect.signature(cls).parameters
    return [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


class LossMix(nn.Module):
    """A weighted sum of registered losses; reports each term so the mix can be inspected.

    ``weights`` and ``temperature`` are the starting values; the trainer may move them each epoch
    (``set_schedule_values``) when schedules are configured.
    """

    def __init__(self, weights: dict[str, float], temperature: float = 4.0,
                 options: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        check_weights(weights)
        check_temperature(temperature)
        options = dict(options or {})
        unknown_opts = [n for n in options if n not in weights]
        if unknown_opts:
            raise EdgekdError(f"options given for {', '.join(map(repr, unknown_opts))}, which is not in the loss mix "
                              f"{sorted(weights)}", "add the loss to the mix or drop its options")
        self.temperature = float(temperature)
        self.weights = {n: float(w) for n, w in weights.items() if w > 0}
        terms = {}
        for name in self.weights:
            cls = LOSSES[name]
            opts = dict(options.get(name) or {})
            accepted = _accepted_options(cls)
            bad = [k for k in opts if k not in accepted]
            if bad:
                raise EdgekdError(f"loss '{name}' has no option {', '.join(map(repr, bad))}",
                                  f"its options: {', '.join(accepted) or '(none)'}")
            try:
                terms[name] = cls(**opts)
            except (TypeError, ValueError) as exc:
                raise EdgekdError(f"bad options for loss '{name}': {exc}", f"its options: {', '.join(accepted)}"
                                  ) from None
        self.terms = nn.ModuleDict(terms)

    @property
    def needs_teacher(self) -> bool:
        return any(term.needs_teacher for term in self.terms.values())

    def feature_pairs(self) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        for term in self.terms.values():
            pairs += term.feature_pairs()
        return list(dict.fromkeys(pairs))

    def student_paths(self) -> list[str]:
        return list(dict.fromkeys(s for s, _ in self.feature_pairs()))

    def teacher_paths(self) -> list[str]:
        return list(dict.fromkeys(t for _, t in self.feature_pairs()))

    def setup(self, student_shapes: dict[str, torch.Size], teacher_shapes: dict[str, torch.Size]) -> None:
        for term in self.terms.values():
            term.setup(student_shapes, teacher_shapes)

    def set_schedule_values(self, temperature: float, weights: dict[str, float]) -> None:
        check_temperature(temperature)
        self.temperature = float(temperature)
        self.weights.update({n: float(w) for n, w in weights.items() if n in self.weights})

    def forward(self, batch: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
        if batch.temperature is None:
            batch = replace(batch, temperature=self.temperature)
        total = batch.student_logits.new_zeros((), dtype=torch.float32)
        parts = {}
        for name, term in self.terms.items():
            value = term(batch).float()
            parts[name] = float(value.detach())
            total = total + self.weights[name] * value
        return total, parts


def check_weights(weights: dict[str, float]) -> None:
    """Unknown names, negative weights and an all-zero mix are configuration mistakes, caught up front."""
    unknown = [n for n in weights if n not in LOSSES]
    if unknown:
        raise EdgekdError(
            f"unknown loss {', '.join(map(repr, unknown))}", f"registered losses: {', '.join(sorted(LOSSES))}"
        )
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise EdgekdError(f"loss weights must be >= 0 and sum to > 0, got {weights}", "e.g. kd=0.7,ce=0.3")
