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
* Under ``torchrun`` (an initialised process group) the student is wrapped in DistributedDataParallel, data is
  sharded with a DistributedSampler, metrics are all-reduced and only rank 0 writes files. On a GPU the
  forward passes run under bf16/fp16 autocast. Each rank builds the full teacher cache itself (samples move
  between shards from epoch to epoch); with data too large for that, pass ``teacher_cache="off"``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from edgekd.data import Dataset
from edgekd.distill.augment import DEFAULT_TEACHING, View, build_augment, check_augment, teacher_cached
from edgekd.distill.checkpoint import checkpoint_path, load_checkpoint, run_key, save_checkpoint
from edgekd.distill.losses import LOSSES, LossInputs, LossMix, check_temperature, check_weights
from edgekd.distill.schedules import (
    LR_SCHEDULES,
    check_schedule,
    epoch_progress,
    make_lr_scheduler,
    schedule_value,
)
from edgekd.distill.taps import FeatureTaps
from edgekd.distill.teachers import TeacherCache, TeacherRunner, check_teacher_weights, combine_teacher_logits
from edgekd.errors import EdgekdError
from edgekd.models.teachers import predict_logits

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
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
    augment: Sequence[str] = ()  # batch transforms by name (distill/augment.py), e.g. ("crop", "flip", "mixup")
    augment_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"mixup": {"alpha": 0.2}}
    teaching: str = DEFAULT_TEACHING  # with augmentation: cached (outputs once, un-augmented) | consistent


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
        }


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0:
        return 0.0
    return float((predict_logits(model, x).argmax(1) == y).mean())


def _device(spec: str) -> torch.device:
    if spec != "auto":
        return torch.device(spec)
    if torch.cuda.is_available():
        if _distributed():  # torchrun sets LOCAL_RANK: this process's GPU on its own machine
            index = int(os.environ.get("LOCAL_RANK", dist.get_rank())) % torch.cuda.device_count()
        else:
            index = torch.cuda.current_device()
        return torch.device("cuda", index)
    return torch.device("cpu")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _amp_dtype(spec: str, device: torch.device) -> torch.dtype | None:
    """Autocast only on a GPU: CPU autocast (bf16) is slower than fp32 on most CPUs without AMX."""
    if device.type != "cuda" or spec == "off":
        return None
    if spec == "fp16":
        return torch.float16
    if spec == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def validate_config(config: TrainConfig, n_teachers: int = 1) -> None:
    """Every configuration mistake ``train`` would find, found now: callers run this before a costly teacher."""
    _validate(config, n_teachers)
    LossMix(config.loss_weights, config.temperature, config.loss_options)  # names and per-loss options


def _validate(config: TrainConfig, n_teachers: int) -> None:
    if config.epochs < 1 or config.batch_size < 1:
        raise EdgekdError(f"epochs and batch_size must be >= 1, got {config.epochs}, {config.batch_size}",
                          "pass positive numbers")
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
    if config.patience is not None and config.patience < 1:
        raise EdgekdError(f"patience must be >= 1, got {config.patience}", "or leave it unset to train every epoch")
    if config.teacher_cache not in ("auto", "off"):
        raise EdgekdError(f"teacher_cache must be 'auto' or 'off', got {config.teacher_cache!r}", "use auto")
    if config.amp not in ("auto", "off", "bf16", "fp16"):
        raise EdgekdError(f"amp must be auto, off, bf16 or fp16, got {config.amp!r}", "use auto")
    check_augment(config.augment, config.augment_options, config.teaching)
    if n_teachers:
        check_teacher_weights(n_teachers, config.teacher_weights, config.teacher_combine)


def _as_list(teacher: nn.Module | Sequence[nn.Module] | None) -> list[nn.Module]:
    if teacher is None:
        return []
    if isinstance(teacher, nn.Module):
        return [teacher]
    return list(teacher)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


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
) -> TrainResult:
    """Train ``model`` with the configured loss mix; keep the weights of the best validation epoch.

    ``teacher``: one module or several (soft targets mixed per ``config.teacher_combine``); None trains alone on
    labels. ``checkpoint_dir``: checkpoint each epoch there and resume a matching run found there.
    ``transform(x, generator)``: per-batch input augmentation; inputs then change per epoch, so the teacher runs
    online. ``on_epoch_end(epoch, history_row)``: called after each epoch's checkpoint is written.
    ``cache_dir``: where memory-mapped teacher caches go (default: the system temp dir).
    """
    teachers = _as_list(teacher)
    _validate(config, len(teachers))
    distributed = _distributed()
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    device = _device(config.device)
    amp_dtype = _amp_dtype(config.amp, device)
    torch.manual_seed(config.seed)
    augment = build_augment(config.augment, config.augment_options, config.teaching, is_image=data.is_image,
                            num_classes=data.num_classes)

    base_weights = config.loss_weights if teachers else {"ce": 1.0}
    mix = LossMix(base_weights, config.temperature, config.loss_options if teachers else {})
    base_weights = dict(mix.weights)
    need_teacher = bool(teachers) and mix.needs_teacher
    teacher_weights = check_teacher_weights(len(teachers), config.teacher_weights, config.teacher_combine) \
        if teachers else []
    model.to(device)
    for t in teachers:
        t.to(device)

    student_taps = FeatureTaps(model, mix.student_paths(), role="student") if mix.student_paths() else None
    runner = TeacherRunner(teachers, mix.teacher_paths()) if need_teacher else None
    cache: TeacherCache | None = None
    try:
        # Probe one batch in eval mode (no BN statistics move, no RNG is drawn) for shapes and class counts;
        # skipped when training alone, so that path runs exactly as it always has (QAT observers see no probe).
        probe = torch.from_numpy(np.ascontiguousarray(data.x_train[:2])).to(device)
        student_shapes: dict[str, torch.Size] = {}
        teacher_shapes: dict[str, torch.Size] = {}
        if teachers:
            was_training = model.training
            model.eval()
            with torch.no_grad():
                student_out = model(probe)
            student_shapes = {k: v.shape for k, v in student_taps.take().items()} if student_taps else {}
            model.train(was_training)
        for i, t in enumerate(teachers):
            with torch.no_grad():
                out = t.eval()(probe)
            if out.shape[-1] != student_out.shape[-1]:
                raise EdgekdError(
                    f"teacher {i} outputs {out.shape[-1]} classes but the student {student_out.shape[-1]}",
                    "distil between models with the same classes (one logit per class of the data)")
        if runner is not None:
            _, probe_feats = runner(probe)
            teacher_shapes = {k: v.shape for k, v in probe_feats.items()}
        for role, wanted, got in (("student", mix.student_paths(), student_shapes),
                                  ("teacher", mix.teacher_paths(), teacher_shapes)):
            silent = [path for path in wanted if path not in got] if teachers else []
            if silent:  # e.g. TorchScript / torch.export modules run compiled code that skips Python hooks
                raise EdgekdError(
                    f"the {role}'s module(s) {', '.join(map(repr, silent))} produced no output to tap (the module "
                    "did not run in forward, or the model is compiled/scripted so forward hooks never fire)",
                    "tap a module that runs in forward, or load the teacher as a state_dict with its architecture "
                    "(--teacher-arch) instead of TorchScript/torch.export")
        mix.setup(student_shapes, teacher_shapes)
        mix.to(device)

        start = time.perf_counter()
        teacher_time = 0.0
        outputs_mode = "none"
        if need_teacher and transform is None and config.teacher_cache == "auto" and \
                teacher_cached(config.augment, config.teaching):
            t0 = time.perf_counter()
            cache = TeacherCache.build(runner, data.x_train, device, config.memmap_threshold_mb,
                                       Path(cache_dir) if cache_dir else None)
            teacher_time = time.perf_counter() - t0
            outputs_mode = f"cached once in {cache.where}"
        elif need_teacher:
            outputs_mode = "online (inference mode, every batch)"

        net: nn.Module = model
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = torch.optim.AdamW([*model.parameters(), *mix.parameters()], lr=config.lr,
                                      weight_decay=config.weight_decay)
        n_train = len(data.y_train)
        per_rank_batch = max(1, config.batch_size // world)
        per_rank_samples = math.ceil(n_train / world)
        steps_per_epoch = max(1, math.ceil(per_rank_samples / per_rank_batch))
        scheduler = make_lr_scheduler(config.lr_schedule, optimizer, config.lr, config.epochs * steps_per_epoch)
        scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        generator = torch.Generator().manual_seed(config.seed)
        sampler = None
        if distributed:
            from torch.utils.data import DistributedSampler

            sampler = DistributedSampler(range(n_train), num_replicas=world, rank=rank, shuffle=True,
                                         seed=config.seed)

        best_state, best_acc, best_epoch, history = _snapshot(model), -1.0, 0, []
        since_best, start_epoch, stopped, elapsed_before, resumed_from = 0, 0, False, 0.0, None
        ckpt = None
        if checkpoint_dir is not None:
            ckpt = checkpoint_path(checkpoint_dir, run_key(config, data, model, teachers, world,
                                                           getattr(transform, "__qualname__", "")))
            state = load_checkpoint(ckpt)
            if state is not None:
                model.load_state_dict(state["model"])
                mix.load_state_dict(state["mix"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                if scaler is not None and state.get("scaler"):
                    scaler.load_state_dict(state["scaler"])
                torch.set_rng_state(state["rng_torch"])
                generator.set_state(state["rng_generator"])
                if device.type == "cuda" and state.get("rng_cuda") is not None:
                    torch.cuda.set_rng_state(state["rng_cuda"], device)
                best_state, best_acc, best_epoch = state["best_state"], state["best_acc"], state["best_epoch"]
                history, since_best, stopped = state["history"], state["since_best"], state["stopped"]
                start_epoch = resumed_from = state["epoch"]
                elapsed_before = state["elapsed_s"]

        autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
        mix_params = [p for p in mix.parameters() if p.requires_grad]
        epochs = range(start_epoch, config.epochs) if not stopped else range(0)
        bar = tqdm(epochs, desc=f"train {config.label}", unit="epoch", disable=not progress or rank != 0,
                   leave=False)
        for epoch in bar:
            t_epoch = time.perf_counter()
            p = epoch_progress(epoch, config.epochs)
            temperature = schedule_value(config.temperature_schedule, config.temperature, p)
            weights_now = {n: schedule_value(config.loss_weight_schedules.get(n), w, p)
                           for n, w in base_weights.items()}
            mix.set_schedule_values(temperature, weights_now)
            model.train()
            if sampler is not None:
                sampler.set_epoch(epoch)
                order = np.fromiter(iter(sampler), dtype=np.int64)
            else:
                order = torch.randperm(n_train, generator=generator).numpy()
            sums = torch.zeros(2 + len(mix.terms), dtype=torch.float64)
            for i in range(0, len(order), per_rank_batch):
                idx = order[i : i + per_rank_batch]
                xb = torch.from_numpy(data.x_train[idx]).to(device)
                yb = torch.from_numpy(data.y_train[idx]).to(device)
                if transform is not None:
                    xb = transform(xb, generator)
                view = augment(xb, yb, generator) if augment is not None else View(xb, yb)
                xb = view.x
                t_logits, t_feats = None, {}
                if need_teacher:
                    t0 = time.perf_counter()
                    if cache is not None:
                        logits_list, t_feats = view.mix_teacher(*cache.batch(idx, device), temperature)
                    else:
                        with autocast():
                            logits_list, t_feats = runner(xb)
                    t_logits = combine_teacher_logits(logits_list, teacher_weights, config.teacher_combine,
                                                      temperature)
                    teacher_time += time.perf_counter() - t0
                with autocast():
                    logits = net(xb)
                    s_feats = student_taps.take() if student_taps else {}
                    loss, parts = mix(LossInputs(logits, view.labels, t_logits, s_feats, t_feats, temperature,
                                                 view.soft_labels))
                optimizer.zero_grad(set_to_none=True)
                (scaler.scale(loss) if scaler else loss).backward()
                if distributed and mix_params:  # adapters live outside DDP: average their grads by hand
                    for param in mix_params:
                        if param.grad is not None:
                            dist.all_reduce(param.grad)
                            param.grad /= world
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                sums += torch.tensor([float(loss.detach()) * len(idx), len(idx),
                                      *(parts[n] * len(idx) for n in mix.terms)], dtype=torch.float64)
            if distributed:
                dist.all_reduce(sums)
            val_acc = _val_accuracy(model, data, device, rank, world)
            if student_taps:
                student_taps.take()  # drop what validation captured
            n = float(sums[1])
            row = {"epoch": epoch + 1, "loss": float(sums[0]) / n,
                   **{f"loss_{k}": float(sums[2 + j]) / n for j, k in enumerate(mix.terms)},
                   "val_accuracy": val_acc, "lr": scheduler.get_last_lr()[0],
                   "epoch_time_s": time.perf_counter() - t_epoch}
            if config.temperature_schedule is not None:
                row["temperature"] = temperature
            if config.loss_weight_schedules:
                row["loss_weights"] = dict(mix.weights)
            history.append(row)
            improved = val_acc > best_acc + config.min_delta
            if val_acc >= best_acc:  # ties go to the later, better-converged epoch
                best_acc, best_epoch, best_state = val_acc, epoch + 1, _snapshot(model)
            since_best = 0 if improved else since_best + 1
            stopped = config.patience is not None and since_best >= config.patience and epoch + 1 < config.epochs
            if ckpt is not None:
                if rank == 0:
                    save_checkpoint(ckpt, {
                        "epoch": epoch + 1, "model": model.state_dict(), "mix": mix.state_dict(),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler else None,
                        "rng_torch": torch.get_rng_state(), "rng_generator": generator.get_state(),
                        "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                        "best_state": best_state, "best_acc": best_acc, "best_epoch": best_epoch,
                        "history": history, "since_best": since_best, "stopped": stopped,
                        "elapsed_s": elapsed_before + time.perf_counter() - start,
                    })
                if distributed:
                    dist.barrier()
            bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{val_acc:.3f}", best=f"{best_acc:.3f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row)
            if stopped:
                break
    finally:
        if student_taps:
            student_taps.close()
        if runner is not None:
            runner.close()
        if cache is not None:
            cache.close()
    model.load_state_dict(best_state)
    model.eval()
    details = {
        "stopped_early": stopped, "teachers": len(teachers), "teacher_weights": teacher_weights or None,
        "teacher_outputs": outputs_mode, "feature_pairs": [list(p) for p in mix.feature_pairs()],
        "resumed_from_epoch": resumed_from, "checkpoint": str(ckpt) if ckpt else None, "world_size": world,
        "device": str(device), "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
    }
    total_time = elapsed_before + time.perf_counter() - start
    return TrainResult(model, best_acc, best_epoch, history, total_time, teacher_time, config, details)


def _val_accuracy(model: nn.Module, data: Dataset, device: torch.device, rank: int, world: int) -> float:
    """Validation accuracy; under DDP each rank scores its shard and the counts are all-reduced."""
    x, y = data.x_val[rank::world], data.y_val[rank::world]
    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(y), 512):
            logits = model(torch.from_numpy(np.ascontiguousarray(x[i : i + 512])).to(device))
            correct += int((logits.argmax(1).cpu().numpy() == y[i : i + 512]).sum())
    counts = torch.tensor([correct, len(y)], dtype=torch.float64)
    if world > 1:
        dist.all_reduce(counts)
    return float(counts[0] / counts[1]) if counts[1] > 0 else 0.0
