"""Schedules for temperature, loss weights and learning rate.

A schedule is a plain dict (YAML-able): ``{"kind": "cosine", "end": 1.0}``; ``start`` defaults to the configured
value. Temperature and loss weights move once per epoch (progress = epoch / (epochs - 1)), which keeps them a
pure function of the epoch number and so exactly reproducible after a resume.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from edgekd.errors import EdgekdError

KINDS = ("constant", "linear", "cosine")
LR_SCHEDULES = ("onecycle", "cosine", "linear", "constant")


def check_schedule(spec: dict[str, Any] | None, what: str) -> None:
    if spec is None:
        return
    if not isinstance(spec, dict):
        raise EdgekdError(f"{what} schedule must be a mapping such as {{'kind': 'cosine', 'end': 1.0}}, got {spec!r}",
                          "give kind (constant|linear|cosine) and end")
    unknown = sorted(set(spec) - {"kind", "start", "end"})
    if unknown:
        raise EdgekdError(f"{what} schedule has unknown keys {unknown}", "use kind, start, end")
    if spec.get("kind", "constant") not in KINDS:
        raise EdgekdError(f"{what} schedule kind {spec.get('kind')!r} is unknown", f"use one of {', '.join(KINDS)}")


def schedule_value(spec: dict[str, Any] | None, default: float, progress: float) -> float:
    """Value at ``progress`` in [0, 1]: constant, linear or half-cosine from ``start`` to ``end``."""
    if spec is None:
        return float(default)
    kind = spec.get("kind", "constant")
    start = float(spec.get("start", default))
    end = float(spec.get("end", start))
    p = min(max(progress, 0.0), 1.0)
    if kind == "constant":
        return start
    if kind == "linear":
        return start + (end - start) * p
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * p))


def epoch_progress(epoch: int, epochs: int) -> float:
    return epoch / (epochs - 1) if epochs > 1 else 0.0


def make_lr_scheduler(kind: str, optimizer: torch.optim.Optimizer, max_lr: float,
                      total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step LR schedule. ``onecycle`` (warm-up then anneal) is the default the project has always used."""
    if kind not in LR_SCHEDULES:
        raise EdgekdError(f"unknown lr schedule {kind!r}", f"use one of {', '.join(LR_SCHEDULES)}")
    total_steps = max(1, total_steps)
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps)
    if kind == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if kind == "linear":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
