"""Pruning after distillation, kept only where it is proven.

Structured pruning removes whole channels through torch-pruning's dependency graph (coupled layers -- residual
adds, depthwise convolutions, BatchNorm -- shrink together), so the pruned model is a smaller dense model that
every runtime runs faster without sparse kernels. It is iterative: each step removes a slice of the MACs (channels
ranked by a torch-pruning importance criterion chosen by name, ``IMPORTANCES``), a short KD fine-tune from the
teacher recovers the accuracy, and the step is exported and timed against the last kept model, interleaved, in
the runtime the caller names (the build uses the target's primary format in fp32; the default is onnxruntime). A
step is kept only when it is faster (or smaller, when asked) by more than the measured noise: MAC counts do not
predict latency on small models, where per-layer overheads dominate, so the measurement decides. Accuracy is
judged on the validation split only.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgekd.data import Dataset
from edgekd.distill.trainer import TrainConfig, accuracy, train
from edgekd.errors import EdgekdError
from edgekd.formats import get_format
from edgekd.models.budget import count_macs, count_params
from edgekd.timing import measure_interleaved

Objective = Literal["latency", "size"]
# Channel-ranking criteria of torch-pruning, by name: (importance class, its arguments, needs gradients).
IMPORTANCES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "magnitude": ("MagnitudeImportance", {"p": 2}, False),  # L2 norm of each channel's weights
    "l1": ("MagnitudeImportance", {"p": 1}, False),
    "lamp": ("LAMPImportance", {"p": 2}, False),  # layer-adaptive magnitude (Lee et al., 2021)
    "fpgm": ("FPGMImportance", {}, False),  # distance to the geometric median (He et al., 2019)
    "bn_scale": ("BNScaleImportance", {}, False),  # BatchNorm gamma (network slimming)
    "taylor": ("TaylorImportance", {}, True),  # first-order Taylor: weight x gradient on a training batch
    "random": ("RandomImportance", {}, False),  # a control: what any criterion must beat
}


# --------------------------------------------------------------------------------------------- config/results
@dataclass(frozen=True)
class PruneConfig:
    """What to prune and when to stop.

    ``ratio`` is the fraction of the student's MACs to remove in total, reached in ``steps`` equal slices.
    ``max_accuracy_drop`` (validation split, vs the unpruned student) or ``accuracy_floor`` (absolute) stops
    the loop; the stricter of the two applies.
    """

    ratio: float = 0.4
    steps: int = 2
    channel_multiple: int = 8
    max_accuracy_drop: float = 0.01
    accuracy_floor: float | None = None
    finetune_epochs: int = 2
    finetune_lr: float = 1e-3
    loss_weights: dict[str, float] = field(default_factory=lambda: {"kd": 0.7, "ce": 0.3})
    temperature: float = 4.0
    seed: int = 0
    objective: Objective = "latency"
    # A step must beat the last kept model by at least this fraction AND by more than the measured noise.
    min_gain: float = 0.03
    threads: int = 1
    rounds: int = 7  # interleaved measurement rounds (each: one block per model, order alternating)
    runs_per_round: int = 60
    importance: str = "magnitude"  # a key of IMPORTANCES

    def validate(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise EdgekdError(f"pruning ratio must lie in [0, 1), got {self.ratio}",
                              "pass the fraction of MACs to remove, e.g. 0.4")
        if self.steps < 1:
            raise EdgekdError(f"pruning steps must be >= 1, got {self.steps}", "use e.g. 2 or 3 steps")
        if self.channel_multiple < 1:
            raise EdgekdError(f"channel_multiple must be >= 1, got {self.channel_multiple}", "use e.g. 8")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise EdgekdError(f"max_accuracy_drop must lie in [0, 1], got {self.max_accuracy_drop}",
                              "use e.g. 0.01 (one accuracy point)")
        if self.accuracy_floor is not None and not 0.0 <= self.accuracy_floor <= 1.0:
            raise EdgekdError(f"accuracy_floor must lie in [0, 1], got {self.accuracy_floor}", "use e.g. 0.85")
        if self.objective not in ("latency", "size"):
            raise EdgekdError(f"unknown pruning objective '{self.objective}'", "use 'latency' or 'size'")
        if self.finetune_epochs < 0:
            raise EdgekdError("finetune_epochs must be >= 0", "use e.g. 2")
        if self.importance not in IMPORTANCES:
            raise EdgekdError(f"unknown pruning importance '{self.importance}'",
                              f"use one of: {', '.join(IMPORTANCES)}")


@dataclass
class LatencyComparison:
    """Paired, interleaved p50s of two artifacts on one host; ``ratios`` = candidate / baseline per round."""

    baseline_p50_ms: float
    candidate_p50_ms: float
    ratios: list[float]
    gain: float  # 1 - median ratio: the fraction of latency removed
    noise: float  # robust spread of the per-round ratios (1.4826 x MAD)
    rounds: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PruneStep:
    """One pruning step: what it removed, what fine-tuning recovered, what the runtime measured, the verdict."""

    step: int
    macs_before: int
    macs_after: int
    params_after: int
    channel_ratio: float
    val_accuracy_pruned: float  # straight after removal, before fine-tuning
    val_accuracy: float  # after the KD fine-tune
    size_bytes: int  # ONNX fp32 file of the candidate
    kept: bool
    reason: str
    latency: LatencyComparison | None = None
    compared_with_step: int = 0  # 0 = the unpruned student

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency"] = self.latency.to_dict() if self.latency else None
        return d


@dataclass
class PruneResult:
    """The model to ship (the last kept step, or the unpruned student), with every step's record."""

    model: nn.Module
    base_macs: int
    base_params: int
    base_val_accuracy: float
    macs: int
    params: int
    val_accuracy: float
    accuracy_floor: float
    steps: list[PruneStep]
    kept_step: int  # 0 = nothing kept
    summary: str
    config: PruneConfig

    @property
    def macs_removed(self) -> float:
        return 1.0 - self.macs / self.base_macs if self.base_macs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": {"macs": self.base_macs, "params": self.base_params, "val_accuracy": self.base_val_accuracy},
            "final": {"macs": self.macs, "params": self.params, "val_accuracy": self.val_accuracy},
            "macs_removed": self.macs_removed,
            "accuracy_floor": self.accuracy_floor,
            "kept_step": self.kept_step,
            "summary": self.summary,
            "steps": [s.to_dict() for s in self.steps],
            "config": asdict(self.config),
        }


# --------------------------------------------------------------------------------------------- helpers
def find_classifier(model: nn.Module, num_classes: int) -> nn.Module:
    """The output layer (never pruned: its outputs are the classes). The last Linear/Conv with num_classes outs."""
    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            found = module
        elif isinstance(module, nn.Conv2d) and module.out_channels == num_classes:
            found = module
    if found is None:
        raise EdgekdError(f"cannot find the model's output layer (a Linear/Conv2d with {num_classes} outputs)",
                          "pass classifier=<module> explicitly")
    return found


def _last_layer_before_failure(model: nn.Module, x: torch.Tensor) -> tuple[str, str]:
    """Run ``model`` and name the last leaf module that started before it failed (or '' if it runs)."""
    started: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _i, n=name: started.append(n))
               for name, m in model.named_modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(x)
        return "", ""
    except Exception as exc:  # noqa: BLE001 - we only want its message and where it happened
        return (started[-1] if started else "<input>"), _first_line(exc)
    finally:
        for h in handles:
            h.remove()


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _importance(name: str, model: nn.Module, grad_batch: tuple[torch.Tensor, torch.Tensor] | None):
    import torch_pruning as tp  # lazy: optional dependency (the prune extra)

    cls_name, kwargs, needs_grad = IMPORTANCES[name]
    if needs_grad:  # gradient-based criteria read .grad: one backward pass on a training batch
        if grad_batch is None:
            raise EdgekdError(f"pruning importance '{name}' needs a training batch", "pass grad_batch")
        model.zero_grad()
        nn.functional.cross_entropy(model.train()(grad_batch[0]), grad_batch[1]).backward()
        model.eval()
    return getattr(tp.importance, cls_name)(**kwargs)


def prune_channels(model: nn.Module, example: torch.Tensor, channel_ratio: float, classifier: nn.Module,
                   channel_multiple: int, importance: str = "magnitude",
                   grad_batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> nn.Module:
    """Remove ``channel_ratio`` of every prunable layer's channels (ranked by ``importance``), in place.

    Raises an EdgekdError naming the layer when the dependency graph cannot trace the model or the pruned
    model no longer runs (e.g. a hard-coded reshape that assumes the old channel count).
    """
    import torch_pruning as tp  # lazy: optional dependency (the prune extra)

    model.eval()
    try:
        pruner = tp.pruner.MetaPruner(
            model, example_inputs=example, importance=_importance(importance, model, grad_batch),
            pruning_ratio=channel_ratio, ignored_layers=[classifier], round_to=channel_multiple,
        )
        pruner.step()
    except Exception as exc:  # noqa: BLE001 - torch-pruning raises many types; the user needs the layer
        layer, msg = _last_layer_before_failure(model, example)
        where = f"at layer '{layer}'" if layer else "while building its dependency graph"
        raise EdgekdError(
            f"structured pruning cannot trace the model {where}: {_first_line(exc)}" + (f" ({msg})" if msg else ""),
            "use standard layers (Conv2d/Linear/BatchNorm, residual adds); or skip pruning for this model",
        ) from None
    layer, msg = _last_layer_before_failure(model, example)
    if layer:
        raise EdgekdError(
            f"after structured pruning the model fails at layer '{layer}': {msg}; the dependency graph could not "
            "follow an operation there (e.g. a reshape with a hard-coded channel count)",
            "replace the fixed-size reshape with torch.flatten / x.view(x.size(0), -1), or skip pruning",
        )
    return model


def _channel_ratio_for_macs(model: nn.Module, example: torch.Tensor, input_shape: tuple[int, ...],
                            target_macs: int, classifier_index: int, channel_multiple: int, importance: str,
                            grad_batch: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[float, nn.Module]:
    """Bisect the uniform channel ratio whose pruned copy has the most MACs <= ``target_macs``.

    Rounding to ``channel_multiple`` makes MACs a step function of the ratio, so bisection on copies is
    simpler and more exact than inverting a MAC model.
    """
    def pruned_copy(ratio: float) -> nn.Module:
        trial = copy.deepcopy(model)
        return prune_channels(trial, example, ratio, list(trial.modules())[classifier_index], channel_multiple,
                              importance, grad_batch)

    lo, hi, best = 0.0, 0.95, None
    for _ in range(7):  # ~1 % resolution on the ratio: finer than one channel multiple on small layers
        mid = (lo + hi) / 2
        trial = pruned_copy(mid)
        if count_macs(trial, input_shape) <= target_macs:
            best, hi = (mid, trial), mid
        else:
            lo = mid
    return best if best is not None else (hi, pruned_copy(hi))  # 95 % short of the slice: the most we can


TimingExport = Callable[[nn.Module, Path], tuple[Path, str]]  # (model, path stem) -> (artifact, precision)


def export_for_timing(model: nn.Module, sample: np.ndarray, path: Path) -> Path:
    """ONNX fp32: the default timing runtime when the caller names none (every host can run it)."""
    return get_format("onnx").backend_class()().export(copy.deepcopy(model).eval(), sample, path, "fp32", None).path


def onnx_timing_export(sample: np.ndarray) -> TimingExport:
    return lambda model, stem: (export_for_timing(model, sample, stem.with_suffix(".onnx")), "fp32")


def compare_latency(baseline: Path, candidate: Path, x: np.ndarray, rounds: int = 7, runs: int = 60,
                    threads: int = 1, precision: str | None = None) -> LatencyComparison:
    """Time two artifacts in their real runtime, interleaved: each round measures one block of each, in
    alternating order, so drift (other processes, thermal state) hits both alike; the per-round ratio cancels it.
    """
    timed = measure_interleaved({"baseline": (baseline, precision), "candidate": (candidate, precision)}, x, threads,
                                rounds=rounds, runs=runs)
    ratios = timed.ratios("baseline", "candidate")
    med = float(np.median(ratios))
    noise = float(1.4826 * np.median(np.abs(np.asarray(ratios) - med)))
    return LatencyComparison(timed.median("baseline"), timed.median("candidate"), [round(r, 5) for r in ratios],
                             1.0 - med, noise, rounds, threads)


def speed_verdict(cmp: LatencyComparison, min_gain: float) -> tuple[bool, str]:
    """Faster by more than ``min_gain`` and by more than twice the measured noise of the ratio."""
    margin = max(min_gain, 2.0 * cmp.noise)
    text = (f"p50 {cmp.candidate_p50_ms:.4f} vs {cmp.baseline_p50_ms:.4f} ms, {cmp.gain:+.1%} "
            f"(noise {cmp.noise:.1%}, required > {margin:.1%}, {cmp.rounds} interleaved rounds)")
    return cmp.gain > margin, text


def _val_accuracy(model: nn.Module, data: Dataset) -> float:
    return accuracy(model, data.x_val, data.y_val)


# --------------------------------------------------------------------------------------------- structured
@dataclass
class _Kept:
    """The last step that was proven (step 0: the unpruned student) and its timing artifact."""

    model: nn.Module
    step: int
    artifact: tuple[Path, str]
    accuracy: float
    macs: int


class _StructuredPruner:
    """The state of one iterative pruning run; ``run`` is the loop, each method one decision."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, data: Dataset, config: PruneConfig,
                 classifier: nn.Module | None, timing_export: TimingExport, work: Path, progress: bool,
                 say: Callable[[str], None]) -> None:
        self.teacher, self.data, self.config, self.progress, self.say = teacher, data, config, progress, say
        self.timing_export, self.work = timing_export, work
        self.example = torch.from_numpy(np.ascontiguousarray(data.x_val[:1]))
        n = min(len(data.y_train), 64)
        self.grad_batch = (torch.from_numpy(np.ascontiguousarray(data.x_train[:n])),
                           torch.from_numpy(data.y_train[:n]))
        self.timing_x = data.x_val[:64]
        self.base = copy.deepcopy(student).eval()
        clf = classifier if classifier is not None else find_classifier(student, data.num_classes)
        self.clf_index = next((i for i, m in enumerate(student.modules()) if m is clf), None)
        if self.clf_index is None:
            raise EdgekdError("the classifier passed is not a module of the student", "pass a module of the student")
        self.base_macs, self.base_acc = count_macs(self.base, data.input_shape), _val_accuracy(self.base, data)
        self.floor = self.base_acc - config.max_accuracy_drop
        if config.accuracy_floor is not None:
            self.floor = max(self.floor, config.accuracy_floor)

    def result(self, kept: _Kept, steps: list[PruneStep], summary: str) -> PruneResult:
        return PruneResult(kept.model.eval(), base_macs=self.base_macs, base_params=count_params(self.base),
                           base_val_accuracy=self.base_acc, macs=kept.macs, params=count_params(kept.model),
                           val_accuracy=kept.accuracy, accuracy_floor=self.floor, steps=steps, kept_step=kept.step,
                           summary=summary, config=self.config)

    def candidate(self, current: nn.Module, k: int, target: int) -> tuple[PruneStep, nn.Module] | None:
        """Prune ``current`` to ``target`` MACs and fine-tune it; None when no channel can go any more."""
        c, shape = self.config, self.data.input_shape
        macs_before = count_macs(current, shape)
        ratio, model = _channel_ratio_for_macs(current, self.example, shape, target, self.clf_index,
                                               c.channel_multiple, c.importance, self.grad_batch)
        macs_after = count_macs(model, shape)
        if macs_after >= macs_before:
            return None
        acc_pruned = _val_accuracy(model, self.data)
        if c.finetune_epochs > 0:
            model = train(model, self.data, TrainConfig(
                epochs=c.finetune_epochs, lr=c.finetune_lr, seed=c.seed + k,
                loss_weights=c.loss_weights if self.teacher is not None else {"ce": 1.0},
                temperature=c.temperature, label=f"prune step {k}"), teacher=self.teacher,
                progress=self.progress).model
        record = PruneStep(k, macs_before, macs_after, count_params(model), round(ratio, 4), acc_pruned,
                           _val_accuracy(model, self.data), 0, kept=False, reason="")
        return record, model

    def judge(self, record: PruneStep, artifact: tuple[Path, str], kept: _Kept) -> tuple[bool, str]:
        """Faster (or smaller) than the last kept step beyond the measured noise?"""
        c = self.config
        if c.objective == "size":
            before = kept.artifact[0].stat().st_size
            gain = 1.0 - record.size_bytes / before
            return gain > c.min_gain, (f"size {record.size_bytes} vs {before} bytes ({gain:+.1%}, required > "
                                       f"{c.min_gain:.0%})")
        record.latency = compare_latency(kept.artifact[0], artifact[0], self.timing_x, c.rounds, c.runs_per_round,
                                         c.threads, precision=artifact[1])
        return speed_verdict(record.latency, c.min_gain)

    def run(self) -> PruneResult:
        c = self.config
        kept = _Kept(self.base, 0, self.timing_export(self.base, self.work / "step0"), self.base_acc,
                     self.base_macs)
        current, steps, stop = copy.deepcopy(self.base), [], ""  # current may run ahead of kept (within noise)
        for k in range(1, c.steps + 1):
            target = int(self.base_macs * (1.0 - c.ratio * k / c.steps))
            if count_macs(current, self.data.input_shape) <= target:
                continue
            made = self.candidate(current, k, target)
            if made is None:
                stop = f"step {k}: no channel can be removed any more at channel multiple {c.channel_multiple}"
                break
            record, current = made
            artifact = self.timing_export(current, self.work / f"step{k}")
            record.size_bytes, record.compared_with_step = artifact[0].stat().st_size, kept.step
            steps.append(record)
            if record.val_accuracy < self.floor:
                record.reason = (f"accuracy {record.val_accuracy:.4f} after fine-tuning is below the floor "
                                 f"{self.floor:.4f}; kept step {kept.step} ({kept.accuracy:.4f})")
                stop = f"step {k} fell below the accuracy floor ({record.val_accuracy:.4f} < {self.floor:.4f})"
                self.say(f"prune step {k}: rejected, {record.reason}")
                break
            ok, why = self.judge(record, artifact, kept)
            if ok:
                record.kept, record.reason = True, f"kept: {why}"
                kept = _Kept(current, k, artifact, record.val_accuracy, record.macs_after)
            else:
                record.reason = (f"rejected: not {'smaller' if c.objective == 'size' else 'faster'} than step "
                                 f"{record.compared_with_step} beyond the noise: {why}; pruning continues from it in "
                                 "case the next step pays")
            self.say(f"prune step {k}: MACs {record.macs_before} -> {record.macs_after} (channels "
                     f"-{record.channel_ratio:.0%}), val acc {record.val_accuracy_pruned:.4f} pruned -> "
                     f"{record.val_accuracy:.4f} tuned; {record.reason}")
        if kept.step == 0:
            return self.result(kept, steps, "pruning rejected: " + (stop or "no step was proven faster/smaller "
                                                                            "than the student"))
        return self.result(kept, steps, f"kept step {kept.step}: {1.0 - kept.macs / self.base_macs:.1%} of MACs "
                                        f"removed, val accuracy {self.base_acc:.4f} -> {kept.accuracy:.4f}"
                                        + (f"; stopped: {stop}" if stop else ""))


def prune_structured(
    student: nn.Module,
    teacher: nn.Module | None,
    data: Dataset,
    config: PruneConfig = PruneConfig(),
    classifier: nn.Module | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    work_dir: Path | None = None,
    timing_export: TimingExport | None = None,
) -> PruneResult:
    """Iteratively prune ``student``'s channels, fine-tune with KD from ``teacher``, keep only proven steps.

    The student is not modified; the result holds a (possibly) pruned copy. ``timing_export(model, stem)``
    writes the model in the runtime the verdict is measured in (default: ONNX fp32). See the module docstring.
    """
    config.validate()
    say = log or (lambda _m: None)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        pruner = _StructuredPruner(student, teacher, data, config, classifier,
                                   timing_export or onnx_timing_export(data.x_val[:64]), work, progress, say)
        base = _Kept(pruner.base, 0, (Path(), ""), pruner.base_acc, pruner.base_macs)
        if config.ratio == 0.0:
            return pruner.result(base, [], "pruning ratio 0: nothing pruned")
        if pruner.base_acc < pruner.floor:
            return pruner.result(base, [], f"the unpruned student ({pruner.base_acc:.4f}) is already below the "
                                           f"accuracy floor {pruner.floor:.4f}: nothing pruned")
        return pruner.run()
