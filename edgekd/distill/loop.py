"""The pieces of ``trainer.train``: run setup, state and checkpoint, one epoch, one step.

``train`` reads as setup -> (resume) -> epochs -> result; each piece is a short function over two small objects:
``Run`` (what does not change during training: model, data, loss mix, optimizer, teacher outputs) and ``State``
(what a checkpoint holds: best weights, history, early-stopping counters, elapsed time). Kept apart from the
public API in ``trainer.py`` so that each piece can be read and tested on its own.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from edgekd import distributed as ranks
from edgekd.data import Dataset
from edgekd.distill.augment import View, build_augment, teacher_cached
from edgekd.distill.batches import to_device
from edgekd.distill.checkpoint import checkpoint_path, load_checkpoint, run_key, save_checkpoint
from edgekd.distill.fast import FastPlan, choose_plan, plan_for
from edgekd.distill.losses import LossInputs, LossMix
from edgekd.distill.schedules import epoch_progress, make_lr_scheduler, schedule_value
from edgekd.distill.taps import FeatureTaps
from edgekd.distill.teachers import TeacherCache, TeacherRunner, check_teacher_weights, combine_teacher_logits
from edgekd.errors import EdgekdError

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
MIN_STEPS_TO_TUNE = 300  # below this many training steps the fast path's timing costs more than it saves


def distributed() -> bool:
    """Training is shared by several ranks (torchrun, outside rank 0's own work)."""
    return ranks.world().size > 1


def pick_device(spec: str) -> torch.device:
    if spec != "auto":
        return torch.device(spec)
    if torch.cuda.is_available():
        if ranks.world().backend == "nccl":  # torchrun's LOCAL_RANK: this process's GPU on its own machine
            return torch.device("cuda", ranks.world().local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def precision(amp: torch.dtype | None) -> str:
    """What the report calls the training precision: fp32, or the autocast dtype (fp16 always with a GradScaler)."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32") if amp else "fp32"


def amp_dtype(spec: str, device: torch.device) -> torch.dtype | None:
    """Autocast only on a GPU: CPU autocast (bf16) is slower than fp32 on most CPUs without AMX."""
    if device.type != "cuda" or spec == "off":
        return None
    if spec == "fp16":
        return torch.float16
    if spec == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@dataclass
class Run:
    """Everything fixed for the length of one training run."""

    model: nn.Module
    data: Dataset
    config: Any  # TrainConfig
    teachers: list[nn.Module]
    device: torch.device
    amp: torch.dtype | None
    world: int
    rank: int
    mix: LossMix
    base_weights: dict[str, float]
    teacher_weights: list[float]
    transform: Transform | None
    augment: Any = None  # distill/augment.py: batch -> View (augmented inputs, labels, teacher mixing)
    student_taps: FeatureTaps | None = None
    runner: TeacherRunner | None = None
    cache: TeacherCache | None = None
    outputs_mode: str = "none"
    net: nn.Module | None = None
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    generator: torch.Generator | None = None
    sampler: Any = None
    per_rank_batch: int = 1
    steps_per_epoch: int = 1
    memory_format: torch.memory_format = torch.contiguous_format
    optimisations: list[str] = field(default_factory=list)
    plan: FastPlan | None = None

    @property
    def need_teacher(self) -> bool:
        return bool(self.teachers) and self.mix.needs_teacher

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()

    def loss_autocast(self) -> contextlib.AbstractContextManager:
        return self.autocast() if self.device.type == "cuda" else contextlib.nullcontext()

    def close(self) -> None:
        for part in (self.student_taps, self.runner, self.cache):
            if part is not None:
                part.close()
        self.net = None  # DDP's gradient hooks go with it: rank 0 goes on training the model alone (QAT, pruning)


@dataclass
class State:
    """What a checkpoint holds besides model/optimizer/RNG states: the run's progress and best epoch."""

    best_state: dict[str, torch.Tensor]
    best_acc: float = -1.0
    best_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    since_best: int = 0
    start_epoch: int = 0
    stopped: bool = False
    elapsed_before: float = 0.0
    resumed_from: int | None = None
    teacher_time: float = 0.0
    ckpt: Path | None = None
    start: float = field(default_factory=time.perf_counter)


def make_run(model: nn.Module, data: Dataset, config: Any, teachers: list[nn.Module],
             transform: Transform | None, fast_plan: dict | None = None) -> Run:
    """Device, loss mix, feature taps and teacher runner; the model and teachers are moved to the device."""
    world, rank = ranks.world().size, ranks.world().rank
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    base = config.loss_weights if teachers else {"ce": 1.0}
    mix = LossMix(base, config.temperature, config.loss_options if teachers else {})
    teacher_weights = check_teacher_weights(len(teachers), config.teacher_weights, config.teacher_combine) \
        if teachers else []
    run = Run(model, data, config, teachers, device, amp_dtype(config.amp, device), world, rank, mix,
              dict(mix.weights), teacher_weights, transform)
    run.augment = build_augment(config.augment, config.augment_options, config.teaching, is_image=data.is_image,
                                num_classes=data.num_classes)
    model.to(device)
    for t in teachers:
        t.to(device)
    if getattr(config, "fast", False):
        apply_plan(run, FastPlan.from_state(fast_plan) if fast_plan else shared_fast_plan(run))
    gpu_channels_last(run)
    if mix.student_paths():
        run.student_taps = FeatureTaps(model, mix.student_paths(), role="student")
    if run.need_teacher:
        run.runner = TeacherRunner(teachers, mix.teacher_paths())
    return run


def gpu_channels_last(run: Run) -> None:
    """Images train in channels_last on a GPU (its tensor cores read NHWC); inputs follow per batch."""
    if run.device.type == "cuda" and run.data.is_image and len(run.data.input_shape) == 3:
        run.model.to(memory_format=torch.channels_last)
        run.memory_format = torch.channels_last
        run.optimisations = sorted({*run.optimisations, "channels_last"})


def shared_fast_plan(run: Run) -> FastPlan:
    """Rank 0's timed choice on every rank: timings differ between processes, the ranks' training must not."""
    if not run.distributed:
        return choose_fast_plan(run)
    return FastPlan.from_state(ranks.from_main(lambda: choose_fast_plan(run).to_state()))


def choose_fast_plan(run: Run) -> FastPlan:
    """The CPU fast path measured on this model (``fast.choose_plan``), unless the run is too short to pay.

    Runs before feature taps exist and on copies of the model, with RNG state restored: the real run's weights
    and random streams are as they would be without it.
    """
    config, data = run.config, run.data
    steps = config.epochs * math.ceil(len(data.y_train) / max(1, config.batch_size // run.world))
    if run.device.type != "cpu" or config.amp not in ("auto", "bf16") or steps < MIN_STEPS_TO_TUNE:
        return plan_for("eager")
    n = min(len(data.y_train), max(2, config.batch_size // run.world))
    x = torch.from_numpy(np.ascontiguousarray(data.x_train[:n]))
    return choose_plan(run.model, x, torch.from_numpy(data.y_train[:n]).long(), run.device)


def apply_plan(run: Run, plan: FastPlan) -> None:
    """Memory format of the student (inputs follow per batch) and CPU autocast dtype; recorded for the report."""
    plan.apply(run.model)
    run.memory_format, run.plan = plan.memory_format, plan
    if run.device.type == "cpu":
        run.amp = plan.amp
    run.optimisations = plan.optimisations


def probe_shapes(run: Run) -> None:
    """One batch in eval mode (no BN statistics move, no RNG is drawn) for feature shapes and class counts.

    Skipped when training alone, so that path runs exactly as it always has (QAT observers see no probe).
    """
    model, mix = run.model, run.mix
    probe = to_device(run.data.x_train[:2], run.device)
    student_shapes: dict[str, torch.Size] = {}
    teacher_shapes: dict[str, torch.Size] = {}
    if run.teachers:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            student_out = model(probe)
        student_shapes = {k: v.shape for k, v in run.student_taps.take().items()} if run.student_taps else {}
        model.train(was_training)
    for i, t in enumerate(run.teachers):
        with torch.no_grad():
            out = t.eval()(probe)
        if out.shape[-1] != student_out.shape[-1]:
            raise EdgekdError(
                f"teacher {i} outputs {out.shape[-1]} classes but the student {student_out.shape[-1]}",
                "distil between models with the same classes (one logit per class of the data)")
    if run.runner is not None:
        _, probe_feats = run.runner(probe)
        teacher_shapes = {k: v.shape for k, v in probe_feats.items()}
    for role, wanted, got in (("student", mix.student_paths(), student_shapes),
                              ("teacher", mix.teacher_paths(), teacher_shapes)):
        silent = [path for path in wanted if path not in got] if run.teachers else []
        if silent:  # e.g. TorchScript / torch.export modules run compiled code that skips Python hooks
            raise EdgekdError(
                f"the {role}'s module(s) {', '.join(map(repr, silent))} produced no output to tap (the module "
                "did not run in forward, or the model is compiled/scripted so forward hooks never fire)",
                "tap a module that runs in forward, or load the teacher as a state_dict with its architecture "
                "(--teacher-arch) instead of TorchScript/torch.export")
    mix.setup(student_shapes, teacher_shapes)
    mix.to(run.device)


def prepare_teacher_outputs(run: Run, cache_dir: str | Path | None) -> float:
    """Cache the teachers' outputs once when inputs don't change between epochs; returns the time it took."""
    if not run.need_teacher:
        return 0.0
    config = run.config
    if run.transform is None and config.teacher_cache == "auto" and teacher_cached(config.augment, config.teaching):
        t0 = time.perf_counter()
        run.cache = TeacherCache.build(run.runner, run.data.x_train, run.device, run.config.memmap_threshold_mb,
                                       Path(cache_dir) if cache_dir else None)
        run.outputs_mode = f"cached once in {run.cache.where}"
        return time.perf_counter() - t0
    run.outputs_mode = "online (inference mode, every batch)"
    return 0.0


def make_optimisation(run: Run) -> None:
    """DDP wrapper, optimizer, per-step LR schedule, grad scaler, shuffling generator and sampler."""
    config, model = run.config, run.model
    run.net = model
    if run.distributed:
        run.net = DistributedDataParallel(model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    run.optimizer = torch.optim.AdamW([*model.parameters(), *run.mix.parameters()], lr=config.lr,
                                      weight_decay=config.weight_decay)
    n_train = len(run.data.y_train)
    run.per_rank_batch = max(1, config.batch_size // run.world)
    run.steps_per_epoch = max(1, math.ceil(math.ceil(n_train / run.world) / run.per_rank_batch))
    run.scheduler = make_lr_scheduler(config.lr_schedule, run.optimizer, config.lr,
                                      config.epochs * run.steps_per_epoch)
    run.scaler = torch.amp.GradScaler("cuda") if run.amp == torch.float16 else None
    run.generator = torch.Generator().manual_seed(config.seed)
    if run.distributed:
        run.sampler = DistributedSampler(range(n_train), num_replicas=run.world, rank=run.rank, shuffle=True,
                                         seed=config.seed)


def resume(run: Run, checkpoint_dir: str | Path | None, key_extra: str) -> State:
    """A fresh State, or the one a matching checkpoint holds (model, optimizer and RNG states restored too)."""
    state = State(best_state=snapshot(run.model))
    if checkpoint_dir is None:
        return state
    state.ckpt = checkpoint_path(checkpoint_dir, run_key(run.config, run.data, run.model, run.teachers, key_extra))
    saved = ranks.from_main(lambda: load_checkpoint(state.ckpt))  # rank 0's file, on every rank and machine
    if saved is None:
        return state
    run.model.load_state_dict(saved["model"])
    run.mix.load_state_dict(saved["mix"])
    run.optimizer.load_state_dict(saved["optimizer"])
    if saved.get("world", run.world) == run.world:
        run.scheduler.load_state_dict(saved["scheduler"])
    else:  # another world size steps each epoch differently: this world's schedule, at the epoch reached
        place_schedule(run.scheduler, saved["epoch"] * run.steps_per_epoch)
    if run.scaler is not None and saved.get("scaler"):
        run.scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["rng_torch"])
    run.generator.set_state(saved["rng_generator"])
    if run.device.type == "cuda" and saved.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(saved["rng_cuda"], run.device)
    state.best_state, state.best_acc, state.best_epoch = saved["best_state"], saved["best_acc"], saved["best_epoch"]
    state.history, state.since_best, state.stopped = saved["history"], saved["since_best"], saved["stopped"]
    state.start_epoch = state.resumed_from = saved["epoch"]
    state.elapsed_before = saved["elapsed_s"]
    if saved.get("fast_plan"):  # the resumed run trains as the killed one did, whatever timing says today
        apply_plan(run, FastPlan.from_state(saved["fast_plan"]))
        gpu_channels_last(run)
    return state


def place_schedule(scheduler: Any, steps_done: int) -> None:
    """Set a per-step LR scheduler (built for this run's total steps) to where ``steps_done`` steps leave it: the
    optimizer's learning rates become the schedule's value at that step."""
    scheduler.last_epoch = steps_done - 1
    scheduler.step()


def save(run: Run, state: State, epoch: int) -> None:
    """Checkpoint after ``epoch`` (rank 0 writes atomically; every rank waits so none runs ahead of the file)."""
    if state.ckpt is None:
        return
    if run.rank == 0:
        save_checkpoint(state.ckpt, {
            "epoch": epoch, "world": run.world, "model": run.model.state_dict(), "mix": run.mix.state_dict(),
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler else None,
            "rng_torch": torch.get_rng_state(), "rng_generator": run.generator.get_state(),
            "rng_cuda": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
            "best_state": state.best_state, "best_acc": state.best_acc, "best_epoch": state.best_epoch,
            "history": state.history, "since_best": state.since_best, "stopped": state.stopped,
            "elapsed_s": state.elapsed_before + time.perf_counter() - state.start,
            "fast_plan": run.plan.to_state() if run.plan else None,
        })
    ranks.barrier()


def epoch_order(run: Run, epoch: int) -> np.ndarray:
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
        return np.fromiter(iter(run.sampler), dtype=np.int64)
    return torch.randperm(len(run.data.y_train), generator=run.generator).numpy()


def train_step(run: Run, idx: np.ndarray, temperature: float, state: State) -> torch.Tensor:
    """One optimisation step on the samples ``idx``; returns [loss * n, n, term_i * n...] for the epoch sums."""
    xb = to_device(run.data.x_train[idx], run.device)
    yb = to_device(run.data.y_train[idx], run.device)
    if run.transform is not None:
        xb = run.transform(xb, run.generator)
    view = run.augment(xb, yb, run.generator) if run.augment is not None else View(xb, yb)
    xb = view.x
    if run.memory_format is not torch.contiguous_format:
        xb = xb.contiguous(memory_format=run.memory_format)
    t_logits, t_feats = None, {}
    if run.need_teacher:
        t0 = time.perf_counter()
        if run.cache is not None:
            logits_list, t_feats = view.mix_teacher(*run.cache.batch(idx, run.device), temperature)
        else:
            with run.autocast():
                logits_list, t_feats = run.runner(xb)
        t_logits = combine_teacher_logits(logits_list, run.teacher_weights, run.config.teacher_combine, temperature)
        state.teacher_time += time.perf_counter() - t0
    with run.autocast():
        logits = run.net(xb)
        s_feats = run.student_taps.take() if run.student_taps else {}
    if run.amp is not None and run.device.type == "cpu":  # CPU autocast keeps softmax in bf16: losses in fp32
        logits, s_feats = logits.float(), {k: v.float() for k, v in s_feats.items()}
    with run.loss_autocast():
        loss, parts = run.mix(LossInputs(logits, view.labels, t_logits, s_feats, t_feats, temperature,
                                         view.soft_labels))
    run.optimizer.zero_grad(set_to_none=True)
    (run.scaler.scale(loss) if run.scaler else loss).backward()
    _average_adapter_grads(run)
    if run.scaler:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    n = len(idx)
    return torch.tensor([float(loss.detach()) * n, n, *(parts[k] * n for k in run.mix.terms)], dtype=torch.float64)


def _average_adapter_grads(run: Run) -> None:
    """Loss-mix adapters live outside DDP: average their gradients across ranks by hand."""
    if not run.distributed:
        return
    for param in run.mix.parameters():
        if param.requires_grad and param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= run.world


def run_epoch(run: Run, state: State, epoch: int, on_batch: Callable[[int, int], None] | None = None) -> dict:
    """Train one epoch, score validation, update best/early-stopping state; returns the history row."""
    config, mix = run.config, run.mix
    t_epoch = time.perf_counter()
    p = epoch_progress(epoch, config.epochs)
    temperature = schedule_value(config.temperature_schedule, config.temperature, p)
    mix.set_schedule_values(temperature, {n: schedule_value(config.loss_weight_schedules.get(n), w, p)
                                          for n, w in run.base_weights.items()})
    run.model.train()
    order = epoch_order(run, epoch)
    sums = torch.zeros(2 + len(mix.terms), dtype=torch.float64)
    for i in range(0, len(order), run.per_rank_batch):
        sums += train_step(run, order[i : i + run.per_rank_batch], temperature, state)
        if on_batch is not None:
            on_batch(min(i + run.per_rank_batch, len(order)), len(order))
    if run.distributed:
        sums = ranks.all_reduce_sum(sums)
        ranks.broadcast_module(run.model)  # the same weights on every rank: the same validation, best, stopping
    val_acc = val_accuracy(run)
    if run.student_taps:
        run.student_taps.take()  # drop what validation captured
    n = float(sums[1])
    row = {"epoch": epoch + 1, "loss": float(sums[0]) / n,
           **{f"loss_{k}": float(sums[2 + j]) / n for j, k in enumerate(mix.terms)},
           "val_accuracy": val_acc, "lr": run.scheduler.get_last_lr()[0], "epoch_time_s": time.perf_counter() - t_epoch}
    if config.temperature_schedule is not None:
        row["temperature"] = temperature
    if config.loss_weight_schedules:
        row["loss_weights"] = dict(mix.weights)
    record_epoch(run, state, row)
    return row


def record_epoch(run: Run, state: State, row: dict) -> None:
    """Append the row; keep the best weights; count epochs without improvement.

    As Keras' EarlyStopping: only a gain above ``min_delta`` moves the best, weights and patience alike. Moving the
    best on smaller gains let a run of them creep upward without ever resetting patience (stopped while still
    learning), and put the best epoch on the last one, so a plateau could not be told from a stop mid-climb. With
    ``min_delta`` 0 a tie goes to the later, better-converged epoch."""
    config, val_acc, epoch = run.config, row["val_accuracy"], row["epoch"]
    state.history.append(row)
    improved = val_acc > state.best_acc + config.min_delta
    if improved or (config.min_delta == 0 and val_acc == state.best_acc):
        state.best_acc, state.best_epoch, state.best_state = val_acc, epoch, snapshot(run.model)
    state.since_best = 0 if improved else state.since_best + 1
    state.stopped = config.patience is not None and state.since_best >= config.patience and epoch < config.epochs


def val_accuracy(run: Run) -> float:
    """Validation accuracy; under DDP each rank scores its shard and the counts are all-reduced."""
    x, y = run.data.x_val[run.rank :: run.world], run.data.y_val[run.rank :: run.world]
    run.model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(y), 512):
            xb = to_device(x[i : i + 512], run.device)
            if run.memory_format is not torch.contiguous_format:
                xb = xb.contiguous(memory_format=run.memory_format)
            correct += int((run.model(xb).argmax(1).cpu().numpy() == y[i : i + 512]).sum())
    counts = ranks.all_reduce_sum(torch.tensor([correct, len(y)], dtype=torch.float64))
    return float(counts[0] / counts[1]) if counts[1] > 0 else 0.0


def details(run: Run, state: State) -> dict[str, Any]:
    return {
        "stopped_early": state.stopped, "teachers": len(run.teachers), "teacher_weights": run.teacher_weights or None,
        "teacher_outputs": run.outputs_mode, "feature_pairs": [list(p) for p in run.mix.feature_pairs()],
        "resumed_from_epoch": state.resumed_from, "checkpoint": str(state.ckpt) if state.ckpt else None,
        "world_size": run.world, "device": str(run.device),
        "amp": str(run.amp).replace("torch.", "") if run.amp else None, "precision": precision(run.amp),
        "optimisations": list(run.optimisations),
        "fast_plan": run.plan.to_state() if run.plan else None,
    }


def as_list(teacher: nn.Module | Sequence[nn.Module] | None) -> list[nn.Module]:
    if teacher is None:
        return []
    if isinstance(teacher, nn.Module):
        return [teacher]
    return list(teacher)
