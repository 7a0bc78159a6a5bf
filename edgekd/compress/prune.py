"""Pruning after distillation, kept only where it is proven.

Structured pruning removes whole channels through torch-pruning's dependency graph (coupled layers -- residual
adds, depthwise convolutions, BatchNorm -- shrink together), so the pruned model is a smaller dense model that
every runtime runs faster without sparse kernels. It is iterative: each step removes a slice of the MACs, a
short KD fine-tune from the teacher recovers the accuracy, and the step is exported and timed in the real
runtime against the last kept model. A step is kept only when it is faster (or smaller, when the target asks
for size) by more than the measured noise: MAC counts do not predict latency on small models, where per-layer
overheads dominate, so the measurement decides.

Unstructured magnitude pruning (zeroed weights, same shapes) is offered too, reported honestly: it shrinks the
*compressed* size of the weights; dense runtimes do not skip zeros, so no speed is claimed unless measured.
"""

from __future__ import annotations

import copy
import gzip
import io
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgekd.data import Dataset
from edgekd.errors import EdgekdError
from edgekd.models.budget import count_macs, count_params

Objective = Literal["latency", "size"]


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


def prune_channels(model: nn.Module, example: torch.Tensor, channel_ratio: float, classifier: nn.Module,
                   channel_multiple: int) -> nn.Module:
    """Remove ``channel_ratio`` of every prunable layer's channels (L2 magnitude), in place; returns the model.

    Raises an EdgekdError naming the layer when the dependency graph cannot trace the model or the pruned
    model no longer runs (e.g. a hard-coded reshape that assumes the old channel count).
    """
    import torch_pruning as tp

    model.eval()
    try:
        pruner = tp.pruner.MetaPruner(
            model, example_inputs=example, importance=tp.importance.MagnitudeImportance(p=2),
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
                            target_macs: int, classifier_index: int, channel_multiple: int,
                            ) -> tuple[float, nn.Module]:
    """Bisect the uniform channel ratio whose pruned copy has the most MACs <= ``target_macs``.

    Rounding to ``channel_multiple`` makes MACs a step function of the ratio, so bisection on copies is
    simpler and more exact than inverting a MAC model.
    """
    lo, hi, best = 0.0, 0.95, None
    for _ in range(7):  # ~1 % resolution on the ratio: finer than one channel multiple on small layers
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        clf = list(trial.modules())[classifier_index]
        prune_channels(trial, example, mid, clf, channel_multiple)
        if count_macs(trial, input_shape) <= target_macs:
            best, hi = (mid, trial), mid
        else:
            lo = mid
    if best is None:  # even 95 % of channels did not reach the slice: take the most we can
        trial = copy.deepcopy(model)
        prune_channels(trial, example, hi, list(trial.modules())[classifier_index], channel_multiple)
        best = (hi, trial)
    return best


def export_for_timing(model: nn.Module, sample: np.ndarray, path: Path) -> Path:
    """ONNX fp32: the runtime every target's ``also`` list and CI host can run, so timings are comparable."""
    from edgekd.backends.onnx import export_onnx_fp32

    return export_onnx_fp32(copy.deepcopy(model).eval(), sample, path)


def compare_latency(baseline: Path, candidate: Path, x: np.ndarray, rounds: int = 7, runs: int = 60,
                    threads: int = 1, precision: str | None = None) -> LatencyComparison:
    """Time two artifacts in their real runtime, interleaved: each round measures one block of each, in
    alternating order, so drift (other processes, thermal state) hits both alike; the per-round ratio cancels it.
    """
    from edgekd.runner import load_session, measure_latency

    sessions = [load_session(str(baseline), threads, precision), load_session(str(candidate), threads, precision)]
    for s in sessions:  # warm both before the first timed block
        measure_latency(s, x, runs=10, warmup=10, blocks=1)
    p50s: list[list[float]] = [[], []]
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            stats, _ = measure_latency(sessions[i], x, runs=runs, warmup=5, blocks=1)
            p50s[i].append(stats["p50"])
    ratios = [c / b for b, c in zip(p50s[0], p50s[1], strict=True)]
    med = float(np.median(ratios))
    noise = float(1.4826 * np.median(np.abs(np.asarray(ratios) - med)))
    return LatencyComparison(float(np.median(p50s[0])), float(np.median(p50s[1])), [round(r, 5) for r in ratios],
                             1.0 - med, noise, rounds, threads)


def speed_verdict(cmp: LatencyComparison, min_gain: float) -> tuple[bool, str]:
    """Faster by more than ``min_gain`` and by more than twice the measured noise of the ratio."""
    margin = max(min_gain, 2.0 * cmp.noise)
    text = (f"p50 {cmp.candidate_p50_ms:.4f} vs {cmp.baseline_p50_ms:.4f} ms, {cmp.gain:+.1%} "
            f"(noise {cmp.noise:.1%}, required > {margin:.1%}, {cmp.rounds} interleaved rounds)")
    return cmp.gain > margin, text


def _val_accuracy(model: nn.Module, data: Dataset) -> float:
    from edgekd.distill.trainer import accuracy

    return accuracy(model, data.x_val, data.y_val)


# --------------------------------------------------------------------------------------------- structured
def prune_structured(
    student: nn.Module,
    teacher: nn.Module | None,
    data: Dataset,
    config: PruneConfig = PruneConfig(),
    classifier: nn.Module | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    work_dir: Path | None = None,
) -> PruneResult:
    """Iteratively prune ``student``'s channels, fine-tune with KD from ``teacher``, keep only proven steps.

    The student is not modified; the result holds a (possibly) pruned copy. See the module docstring.
    """
    from edgekd.distill.trainer import TrainConfig, train

    config.validate()
    say = log or (lambda _m: None)
    input_shape = data.input_shape
    example = torch.from_numpy(np.ascontiguousarray(data.x_val[:1]))
    base = copy.deepcopy(student).eval()
    clf = classifier if classifier is not None else find_classifier(student, data.num_classes)
    modules = list(student.modules())
    clf_index = next((i for i, m in enumerate(modules) if m is clf), None)
    if clf_index is None:
        raise EdgekdError("the classifier passed is not a module of the student", "pass a module of the student")

    base_macs, base_params = count_macs(base, input_shape), count_params(base)
    base_acc = _val_accuracy(base, data)
    floor = base_acc - config.max_accuracy_drop
    if config.accuracy_floor is not None:
        floor = max(floor, config.accuracy_floor)
    result_kwargs = {"base_macs": base_macs, "base_params": base_params, "base_val_accuracy": base_acc,
                     "accuracy_floor": floor, "config": config}
    if config.ratio == 0.0:
        return PruneResult(base, macs=base_macs, params=base_params, val_accuracy=base_acc, steps=[], kept_step=0,
                           summary="pruning ratio 0: nothing pruned", **result_kwargs)
    if base_acc < floor:
        return PruneResult(base, macs=base_macs, params=base_params, val_accuracy=base_acc, steps=[], kept_step=0,
                           summary=f"the unpruned student ({base_acc:.4f}) is already below the accuracy floor "
                                   f"{floor:.4f}: nothing pruned", **result_kwargs)

    timing_x = data.x_val[:64]
    tmp_ctx = tempfile.TemporaryDirectory() if work_dir is None else None
    tmp = Path(tmp_ctx.name) if tmp_ctx else Path(work_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        kept_model, kept_step, kept_path = base, 0, export_for_timing(base, timing_x, tmp / "step0.onnx")
        kept_acc, kept_macs = base_acc, base_macs
        current = copy.deepcopy(base)  # may run ahead of the kept model when a step was within noise
        steps: list[PruneStep] = []
        stop_reason = ""
        for k in range(1, config.steps + 1):
            target = int(base_macs * (1.0 - config.ratio * k / config.steps))
            macs_before = count_macs(current, input_shape)
            if macs_before <= target:
                continue
            ratio, candidate = _channel_ratio_for_macs(current, example, input_shape, target, clf_index,
                                                       config.channel_multiple)
            macs_after = count_macs(candidate, input_shape)
            if macs_after >= macs_before:
                stop_reason = (f"step {k}: no channel can be removed any more at channel multiple "
                               f"{config.channel_multiple}")
                break
            acc_pruned = _val_accuracy(candidate, data)
            if config.finetune_epochs > 0:
                tuned = train(candidate, data, TrainConfig(
                    epochs=config.finetune_epochs, lr=config.finetune_lr, seed=config.seed + k,
                    loss_weights=config.loss_weights if teacher is not None else {"ce": 1.0},
                    temperature=config.temperature, label=f"prune step {k}"), teacher=teacher, progress=progress)
                candidate = tuned.model
            acc = _val_accuracy(candidate, data)
            path = export_for_timing(candidate, timing_x, tmp / f"step{k}.onnx")
            size = path.stat().st_size
            record = PruneStep(k, macs_before, macs_after, count_params(candidate), round(ratio, 4), acc_pruned, acc,
                               size, kept=False, reason="", compared_with_step=kept_step)
            steps.append(record)
            current = candidate
            if acc < floor:
                record.reason = (f"accuracy {acc:.4f} after fine-tuning is below the floor {floor:.4f}; "
                                 f"kept step {kept_step} ({kept_acc:.4f})")
                stop_reason = f"step {k} fell below the accuracy floor ({acc:.4f} < {floor:.4f})"
                say(f"prune step {k}: rejected, {record.reason}")
                break
            if config.objective == "size":
                gain = 1.0 - size / kept_path.stat().st_size
                ok = gain > config.min_gain
                why = f"size {size} vs {kept_path.stat().st_size} bytes ({gain:+.1%}, required > {config.min_gain:.0%})"
            else:
                record.latency = compare_latency(kept_path, path, timing_x, config.rounds, config.runs_per_round,
                                                 config.threads)
                ok, why = speed_verdict(record.latency, config.min_gain)
            if ok:
                record.kept, record.reason = True, f"kept: {why}"
                kept_model, kept_step, kept_path, kept_acc, kept_macs = candidate, k, path, acc, macs_after
            else:
                record.reason = (f"rejected: not {'smaller' if config.objective == 'size' else 'faster'} than step "
                                 f"{record.compared_with_step} beyond the noise: {why}; pruning continues from it in "
                                 "case the next step pays")
            say(f"prune step {k}: MACs {macs_before} -> {macs_after} (channels -{ratio:.0%}), val acc "
                f"{acc_pruned:.4f} pruned -> {acc:.4f} tuned; {record.reason}")
    finally:
        if tmp_ctx:
            tmp_ctx.cleanup()

    removed = 1.0 - kept_macs / base_macs
    if kept_step == 0:
        summary = "pruning rejected: " + (stop_reason or "no step was proven faster/smaller than the student")
    else:
        summary = (f"kept step {kept_step}: {removed:.1%} of MACs removed, val accuracy {base_acc:.4f} -> "
                   f"{kept_acc:.4f}" + (f"; stopped: {stop_reason}" if stop_reason else ""))
    return PruneResult(kept_model.eval(), macs=kept_macs, params=count_params(kept_model), val_accuracy=kept_acc,
                       steps=steps, kept_step=kept_step, summary=summary, **result_kwargs)


# --------------------------------------------------------------------------------------------- unstructured
@dataclass
class UnstructuredResult:
    """Magnitude-pruned weights (same shapes, zeros), with sizes that say what the zeros buy: compression only."""

    model: nn.Module
    sparsity: float  # fraction of prunable weights that are zero
    val_accuracy_before: float
    val_accuracy: float
    dense_bytes: int  # raw float32 weights
    gzip_bytes_before: int
    gzip_bytes: int
    latency: LatencyComparison | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("model", "latency")}
        d["latency"] = self.latency.to_dict() if self.latency else None
        return d


def weights_gzip_bytes(model: nn.Module) -> tuple[int, int]:
    """(raw, gzip-compressed) bytes of all float tensors of the state_dict: what a download/flash would cost."""
    buf = io.BytesIO()
    for t in model.state_dict().values():
        if t.is_floating_point():
            buf.write(t.detach().cpu().contiguous().numpy().astype(np.float32).tobytes())
    raw = buf.getvalue()
    return len(raw), len(gzip.compress(raw, compresslevel=9))


def prune_unstructured(
    student: nn.Module,
    data: Dataset,
    amount: float,
    teacher: nn.Module | None = None,
    finetune_epochs: int = 0,
    finetune_lr: float = 1e-3,
    seed: int = 0,
    measure_latency: bool = False,
    threads: int = 1,
    progress: bool = False,
) -> UnstructuredResult:
    """Zero the ``amount`` smallest-magnitude weights of all Conv/Linear layers together (global L1).

    Fine-tuning keeps the masks (torch's pruning reparametrisation) so zeros stay zero; the masks are then made
    permanent. Latency is only reported when ``measure_latency`` is set, and then as measured.
    """
    import torch.nn.utils.prune as tprune

    if not 0.0 <= amount < 1.0:
        raise EdgekdError(f"unstructured pruning amount must lie in [0, 1), got {amount}", "use e.g. 0.5")
    model = copy.deepcopy(student).eval()
    acc_before = _val_accuracy(model, data)
    _, gz_before = weights_gzip_bytes(model)
    params = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if amount > 0:
        tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
        if finetune_epochs > 0:
            from edgekd.distill.trainer import TrainConfig, train

            model = train(model, data, TrainConfig(epochs=finetune_epochs, lr=finetune_lr, seed=seed,
                                                   loss_weights={"kd": 0.7, "ce": 0.3} if teacher else {"ce": 1.0},
                                                   label="unstructured fine-tune"),
                          teacher=teacher, progress=progress).model
        for m, name in params:
            tprune.remove(m, name)
    total = sum(m.weight.numel() for m, _ in params)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    dense, gz = weights_gzip_bytes(model)
    latency = None
    note = (f"{zeros / total:.1%} of Conv/Linear weights are zero; compressed weights {gz_before} -> {gz} bytes "
            f"(gzip). Shapes are unchanged: dense runtimes do the same work, so no speed-up is claimed")
    if measure_latency:
        with tempfile.TemporaryDirectory() as tmp:
            a = export_for_timing(student, data.x_val[:64], Path(tmp) / "dense.onnx")
            b = export_for_timing(model, data.x_val[:64], Path(tmp) / "sparse.onnx")
            latency = compare_latency(a, b, data.x_val[:64], threads=threads)
        note += f"; measured p50 {latency.candidate_p50_ms:.4f} vs {latency.baseline_p50_ms:.4f} ms dense"
    return UnstructuredResult(model.eval(), zeros / total if total else 0.0, acc_before, _val_accuracy(model, data),
                              dense, gz_before, gz, latency, note)
