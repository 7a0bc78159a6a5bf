"""The training loop shared by teacher training, distillation and the trained-alone baseline.

What it adds around a plain loop, and why:

* Teacher outputs (logits and tapped features) are computed once up front when inputs don't change between
  epochs (no ``transform``): the teacher then costs one forward pass over the data instead of one per epoch.
  Large caches are memory-mapped ``.npy`` files. With a transform the teacher runs per batch under
  inference mode. The teacher's share of training time is reported either way. ``config.augment`` names batch
  augmentations (``augment.py``); ``config.teaching`` says whether the teacher sees the student's augmented view
  (consistent) or its cached outputs on the un-augmented inputs are used (cached).
* Several teachers: soft targets mixed by fixed weights or per-sample confidence (``teachers.py``).
* Schedules for temperature, loss weights (per epoch) and learning rate (per step); early stopping on val.
* Checkpoints each epoch (``checkpoint.py``) so a killed run resumes to bit-identical weights.
* Under ``torchrun`` (``edgekd/distributed.py``) the model is wrapped in DistributedDataParallel, data is
  sharded with a DistributedSampler (reseeded each epoch), metrics are all-reduced and rank 0's BatchNorm
  statistics broadcast before validation, so every rank takes the same best-epoch and early-stopping decisions;
  rank 0 alone chooses the CPU fast plan and reads and writes checkpoints (a checkpoint holds the unwrapped
  model). Each rank computes its shard of the teacher cache and all of them gather the whole (samples move
  between shards from epoch to epoch). On a GPU the forward passes run under bf16 autocast (fp16 with a
  GradScaler where bf16 is unsupported), images in channels_last, batches copied from pinned memory.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ConfigDict
from pydantic.dataclasses import dataclass as pydantic_dataclass
from torch import nn

from edgekd.counts import COUNT_LIMITS
from edgekd.data import Dataset
from edgekd.distill import loop
from edgekd.distill.augment import DEFAULT_TEACHING, check_augment
from edgekd.distill.fast import torch_threads
from edgekd.distill.loop import Transform
from edgekd.distill.losses import LOSSES, LossMix, check_temperature, check_weights
from edgekd.distill.schedules import LR_SCHEDULES, check_schedule, schedule_value
from edgekd.distill.teachers import check_teacher_weights
from edgekd.errors import EdgekdError
from edgekd.models.teachers import predict_logits
from edgekd.progress import Progress

__all__ = ["Cancelled", "TrainConfig", "TrainResult", "Transform", "accuracy", "train", "validate_config"]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrainConfig:
    """Every training setting, typed: a ``--distill-config`` value of the wrong type fails here, by field name.

    A pydantic dataclass, so ``dataclasses.replace``/``asdict``/``fields`` work as on a plain one.
    """


    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 4.0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"kd": 0.7, "ce": 0.3})
    seed: int = 0
    label: str = "student"
    # per-loss options, e.g. {"hint": {"student": "features", "teacher": "features"}, "dkd": {"beta": 8}}
    loss_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    temperature_schedule: dict[str, Any] | None = None  # {"kind": "linear"|"cosine"|"constant", "end": 1.0}
    loss_weight_schedules: dict[str, dict[str, Any]] = field(default_factory=dict)  # loss name -> schedule
    lr_schedule: str = "onecycle"  # onecycle | cosine | linear | constant
    patience: int | None = None  # early stopping: epochs without val improvement (> min_delta) before stopping
    min_delta: float = 0.0
    teacher_weights: tuple[float, ...] | None = None  # several teachers: fixed mixing weights (default equal)
    teacher_combine: str = "fixed"  # fixed | confidence (per-sample, scaled by each teacher's max probability)
    teacher_cache: str = "auto"  # auto: cache teacher outputs when inputs don't change; off: run it per batch
    memmap_threshold_mb: float = 256.0  # teacher caches larger than this live in memory-mapped files
    amp: str = "auto"  # auto: bf16 (fp16 where bf16 is unsupported) on a GPU, none on CPU | off | bf16 | fp16
    device: str = "auto"  # auto: cuda (this rank's GPU) when available, else cpu
    augment: tuple[str, ...] | str = ()  # batch transforms by name (a bare string: check_augment refuses it)
    # (distill/augment.py), e.g. ("crop", "flip", "mixup")
    augment_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"mixup": {"alpha": 0.2}}
    teaching: str = DEFAULT_TEACHING  # with augmentation: cached (outputs once, un-augmented) | consistent
    # CPU fast path (distill/fast.py): channels_last / bf16 autocast where measured faster on this CPU for this
    # model. Off by default for library callers (QAT, pruning fine-tunes); `edgekd build` turns it on.
    fast: bool = False


@dataclass
class TrainResult:
    model: nn.Module
    best_val_accuracy: float
    best_epoch: int
    history: list[dict]
    train_time_s: float
    teacher_time_s: float
    config: TrainConfig
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def epoch_time_s(self) -> float:
        """Mean wall time of one training epoch (excludes the one-off teacher cache pass)."""
        times = [h["epoch_time_s"] for h in self.history if "epoch_time_s" in h]
        return float(np.mean(times)) if times else 0.0

    def summary(self) -> dict:
        c = self.config
        return {
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "epochs": c.epochs,
            "epochs_run": len(self.history),
            "train_time_s": round(self.train_time_s, 3),
            "teacher_time_s": round(self.teacher_time_s, 3),
            "teacher_time_share": round(self.teacher_time_s / max(self.train_time_s, 1e-9), 4),
            "epoch_time_s": round(self.epoch_time_s, 3),
            "loss_weights": c.loss_weights,
            "loss_options": c.loss_options,
            "temperature": c.temperature,
            "augment": {"transforms": list(c.augment), "options": c.augment_options, "teaching": c.teaching},
            "temperature_schedule": c.temperature_schedule,
            "loss_weight_schedules": c.loss_weight_schedules,
            "lr": c.lr,
            "lr_schedule": c.lr_schedule,
            "batch_size": c.batch_size,
            "seed": c.seed,
            "early_stopping": {"patience": c.patience, "min_delta": c.min_delta,
                               "stopped_early": self.details.get("stopped_early", False)},
            "teachers": {"count": self.details.get("teachers", 0), "combine": c.teacher_combine,
                         "weights": self.details.get("teacher_weights"),
                         "outputs": self.details.get("teacher_outputs", "none")},
            "feature_pairs": self.details.get("feature_pairs", []),
            "resumed_from_epoch": self.details.get("resumed_from_epoch"),
            "checkpoint": self.details.get("checkpoint"),
            "world_size": self.details.get("world_size", 1),
            "device": self.details.get("device", "cpu"),
            "amp": self.details.get("amp"),
            "optimisations": self.details.get("optimisations", []),
            "fast_plan": self.details.get("fast_plan"),
        }


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0:
        return 0.0
    return float((predict_logits(model, x).argmax(1) == y).mean())


def validate_config(config: TrainConfig, n_teachers: int = 1) -> None:
    """Every configuration mistake ``train`` would find, found now: callers run this before a costly teacher."""
    _validate(config, n_teachers)
    LossMix(config.loss_weights, config.temperature, config.loss_options)  # names and per-loss options


# Ranges of the numeric settings, whichever way they arrive (a flag, a --distill-config YAML, the Python API): the
# epochs share the command line's cap on --epochs (counts.py), so a YAML cannot ask for what the flag refuses.
LIMITS: dict[str, tuple[float, float]] = {
    "epochs": COUNT_LIMITS["--epochs"],
    "batch_size": (1, 65_536),
    "patience": COUNT_LIMITS["--epochs"],
    "lr": (0.0, 10.0),
    "weight_decay": (0.0, 10.0),
    "min_delta": (0.0, 1.0),
    "memmap_threshold_mb": (0.0, 1e9),
}


def _check_limits(config: TrainConfig) -> None:
    for name, (low, high) in LIMITS.items():
        value = getattr(config, name)
        if value is not None and not low <= value <= high:  # NaN fails the comparison too
            raise EdgekdError(f"training setting {name} = {value!r} is outside the accepted range {low:,}..{high:,}",
                              f"give {name} a value from {low:,} to {high:,}"
                              + (" (the cap of --epochs)" if name == "epochs" else ""))


def _check_device(name: str) -> None:
    """A named device must exist on this host: refused now, not after a teacher has trained for an hour."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise EdgekdError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return
    backend = getattr(torch, device.type, None)
    available = callable(getattr(backend, "is_available", None)) and backend.is_available()
    count = backend.device_count() if available and callable(getattr(backend, "device_count", None)) else 0
    if not available or (device.index is not None and device.index >= count):
        have = f"{count} {device.type} device(s)" if available else f"no {device.type} device"
        raise EdgekdError(f"training device {name!r}: this host has {have} (torch {torch.__version__})",
                          "use device: auto (a GPU when there is one, else the CPU) or cpu")


def _validate(config: TrainConfig, n_teachers: int) -> None:
    _check_limits(config)
    _check_device(config.device)
    check_temperature(config.temperature)
    check_weights(config.loss_weights)
    check_schedule(config.temperature_schedule, "temperature")
    if config.temperature_schedule is not None:
        for p in (0.0, 1.0):
            check_temperature(schedule_value(config.temperature_schedule, config.temperature, p))
    for name, spec in config.loss_weight_schedules.items():
        if name not in config.loss_weights:
            raise EdgekdError(f"weight schedule for loss '{name}', not in the mix {sorted(config.loss_weights)}",
                              f"registered losses: {', '.join(sorted(LOSSES))}")
        check_schedule(spec, f"loss weight '{name}'")
    for p in (0.0, 1.0):
        check_weights({n: schedule_value(config.loss_weight_schedules.get(n), w, p)
                       for n, w in config.loss_weights.items()})
    if config.lr_schedule not in LR_SCHEDULES:
        raise EdgekdError(f"unknown lr schedule {config.lr_schedule!r}", f"use one of {', '.join(LR_SCHEDULES)}")
    if config.teacher_cache not in ("auto", "off"):
        raise EdgekdError(f"teacher_cache must be 'auto' or 'off', got {config.teacher_cache!r}", "use auto")
    if config.amp not in ("auto", "off", "bf16", "fp16"):
        raise EdgekdError(f"amp must be auto, off, bf16 or fp16, got {config.amp!r}", "use auto")
    check_augment(config.augment, config.augment_options, config.teaching)
    if n_teachers:
        check_teacher_weights(n_teachers, config.teacher_weights, config.teacher_combine)


class Cancelled(Exception):
    """Raised in a run between batches once its ``stop`` event is set (``side_by_side.py``)."""


def _stoppable(on_batch: Callable[[int, int], None], stop: threading.Event | None) -> Callable[[int, int], None]:
    """``on_batch`` that first raises ``Cancelled`` once ``stop`` is set: runs stop between batches, never mid-write."""
    if stop is None:
        return on_batch

    def checked(done: int, total: int) -> None:
        if stop.is_set():
            raise Cancelled
        on_batch(done, total)

    return checked


def train(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    teacher: nn.Module | Sequence[nn.Module] | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    transform: Transform | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    cache_dir: str | Path | None = None,
    fast_plan: dict | None = None,
    on_fast_plan: Callable[[dict | None], None] | None = None,
    stop: threading.Event | None = None,
    teacher_threads: int | None = None,
) -> TrainResult:
    """Train ``model`` with the configured loss mix; keep the weights of the best validation epoch.

    ``teacher``: one module or several (soft targets mixed per ``config.teacher_combine``); None trains alone on
    labels. ``checkpoint_dir``: checkpoint each epoch there and resume a matching run found there.
    ``transform(x, generator)``: per-batch input augmentation; inputs then change per epoch, so the teacher runs
    online. ``on_epoch_end(epoch, history_row)``: called after each epoch's checkpoint is written.
    ``cache_dir``: where memory-mapped teacher caches go (default: the system temp dir).
    ``fast_plan``: with ``config.fast``, reuse a plan another run of the same model chose (``details["fast_plan"]``)
    instead of timing candidates again (the ``--baseline`` run reuses the KD run's); ``on_fast_plan(plan)`` hears
    the plan this run trains with once it is chosen and the one-off teacher pass is done (``side_by_side.py``
    hands it to the run beside it, which starts then). ``teacher_threads``: torch threads for that teacher pass
    (the side-by-side KD run gets all the cores for it while the other run waits; None: the current count).
    ``stop``: when set (by another thread), the run raises ``Cancelled`` at its next batch.
    """
    teachers = loop.as_list(teacher)
    _validate(config, len(teachers))
    run = loop.make_run(model, data, config, teachers, transform, fast_plan)
    try:
        loop.probe_shapes(run)
        start = time.perf_counter()
        with torch_threads(teacher_threads):
            teacher_time = loop.prepare_teacher_outputs(run, cache_dir)
        if on_fast_plan is not None:
            on_fast_plan(run.plan.to_state() if run.plan else None)
        loop.make_optimisation(run)
        state = loop.resume(run, checkpoint_dir, getattr(transform, "__qualname__", ""))
        state.start, state.teacher_time = start, teacher_time
        epochs = range(state.start_epoch, config.epochs) if not state.stopped else range(0)
        bar = Progress(f"train {config.label}", config.epochs, enabled=progress and run.rank == 0)
        for epoch in epochs:
            bar.start_epoch(epoch + 1, math.ceil(len(data.y_train) / run.world))
            row = loop.run_epoch(run, state, epoch, on_batch=_stoppable(bar.update, stop))
            loop.save(run, state, epoch + 1)
            bar.end_epoch(row, state.best_acc)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row)
            if state.stopped:
                break
    finally:
        run.close()
        # Back on the CPU and in the default memory format whatever happened: MAC counting, teacher logits and
        # export all feed contiguous CPU tensors (litert-torch mis-converts channels_last weights: a teacher_resnet
        # trained channels_last exported to TFLite with max|diff| 20).
        for module in (model, *teachers):
            module.to(device="cpu", memory_format=torch.contiguous_format)
    model.load_state_dict(state.best_state)
    model.eval()
    total_time = state.elapsed_before + time.perf_counter() - state.start
    return TrainResult(model, state.best_acc, state.best_epoch, state.history, total_time, state.teacher_time, config,
                       loop.details(run, state))
