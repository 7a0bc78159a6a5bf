"""Stage: compression after distillation, all decided before the final export, on the validation split only.

1. Structured pruning (``--prune``): steps kept only when measured faster in the target's primary format.
2. int8 per format, as a contract: plain post-training int8 first; when it loses more than the target's
   ``max_quantization_drop`` on the validation split, the format's backend searches for the fewest layers to keep
   in float; when that fails too and ``--qat-epochs`` is set, quantization-aware training with the teacher
   (onnxruntime QDQ) makes a new model whose int8 artifact carries its own fp32 reference. A contract nothing
   meets raises ContractError: the build ships nothing.

The int8 files are written straight into the staging directory (never the run directory): a failed build
leaves none behind. The test split is never read here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edgekd.backends import Artifact, Calibration
from edgekd.compress.accuracy_aware import QuantContract, QuantJob
from edgekd.compress.prune import PruneConfig, prune_structured
from edgekd.distill.trainer import accuracy
from edgekd.errors import ContractError
from edgekd.formats import get_format
from edgekd.runner import load_session
from edgekd.stages.context import BuildContext
from edgekd.stages.teacher import Teachers


@dataclass
class Int8Plan:
    """The int8 artifact of one format and the PyTorch model it was quantized from (its parity reference)."""

    artifact: Artifact
    model: nn.Module
    reference: str = "student"  # "student", or "qat": a model retrained by quantization-aware training


@dataclass
class Compressed:
    student: nn.Module  # the fp32 student to ship (pruned when a step was proven)
    unpruned: nn.Module | None  # kept for the stage waterfall when pruning changed the student
    pruning: Any = None  # PruneResult
    int8: dict[str, Int8Plan] = field(default_factory=dict)


def backend_for(ctx: BuildContext, fmt: str):
    """The format's backend for this build. A backend with a ``cache_dir`` attribute (ONNX: its int8 scheme memo)
    is handed the build's cache (None with --no-cache); a plugin's backend needs none."""
    backend = get_format(fmt).backend_class().from_target(ctx.target)
    if hasattr(backend, "cache_dir"):
        backend.cache_dir = ctx.options.teacher_cache
    return backend


def prune(ctx: BuildContext, student: nn.Module, teachers: Teachers) -> tuple[nn.Module, Any]:
    """Structured pruning timed in the target's primary format (fp32), interleaved with the last kept model."""
    o, fmt = ctx.options, ctx.target.runtime.format
    backend, suffix, sample = backend_for(ctx, fmt), get_format(fmt).suffix, ctx.data.x_val[:1]

    def timing_export(model: nn.Module, stem: Path) -> tuple[Path, str]:
        return backend.export(copy.deepcopy(model).eval(), sample, stem.with_suffix(suffix), "fp32", None).path, "fp32"

    result = prune_structured(student, teachers.primary.model, ctx.data, PruneConfig(
        ratio=o.prune, steps=o.prune_steps, channel_multiple=ctx.target.student_budget.channel_multiple,
        loss_weights=o.loss_weights, temperature=o.temperature, seed=o.seed, threads=ctx.threads,
        objective="latency", importance=o.prune_importance), progress=o.progress, log=ctx.say,
        timing_export=timing_export)
    ctx.say(f"pruning: {result.summary}")
    return (result.model if result.kept_step else student), result


def val_drop(model: nn.Module, artifact: Artifact, x, y) -> float:
    """fp32 accuracy minus the artifact's, both on the validation split, the artifact in its real runtime."""
    logits = load_session(str(artifact.path), 1, artifact.precision).run_batched(x)
    return accuracy(model, x, y) - float((logits.argmax(1) == y).mean())


def plan_int8(ctx: BuildContext, fmt: str, student: nn.Module, teachers: Teachers | None,
              calibration: Calibration, stage: Path) -> Int8Plan:
    """Plain int8, else the backend's accuracy-aware search, else QAT: the first that meets the contract."""
    data, o, max_drop = ctx.data, ctx.options, ctx.target.budgets.max_quantization_drop
    backend, suffix, sample = backend_for(ctx, fmt), get_format(fmt).suffix, data.x_val[:1]
    plain = backend.export(student, sample, stage / f"model_int8{suffix}", "int8", calibration)
    if max_drop is None:
        return Int8Plan(plain, student)
    drop = val_drop(student, plain, data.x_val, data.y_val)
    if drop <= max_drop + 1e-12:
        return Int8Plan(plain, student)
    ctx.say(f"quantize: plain {fmt} int8 loses {drop:.4f} on the validation split > max_quantization_drop "
            f"{max_drop}; searching for layers to keep in float")
    fp32 = backend.export(student, sample, stage / f".search_fp32{suffix}", "fp32", None)
    job = QuantJob(student, sample, fp32.path, plain, plain.path, calibration, (data.x_val, data.y_val),
                   QuantContract(max_drop), o.max_float_fraction, ctx.threads, data.x_val[:64], ctx.say)
    try:
        result = backend.accuracy_aware_int8(job)
        plain.details["accuracy_aware"] = {k: v for k, v in result.to_dict().items() if k != "path"}
        return Int8Plan(plain, student)
    except ContractError:
        if not (o.qat_epochs and hasattr(backend, "qat_int8")):
            for f in plain.files:  # the plain int8 that broke the contract must not be left to ship
                f.unlink(missing_ok=True)
            raise
    finally:
        for f in fp32.files:
            f.unlink(missing_ok=True)
    ctx.say("quantize: post-training search failed; trying QAT with the teacher")
    teacher = teachers.primary.model if teachers is not None else None
    model, details = backend.qat_int8(job, teacher, data, o.qat_epochs, o.seed, o.progress)
    plain.details["qat"] = details
    return Int8Plan(plain, model, reference="qat")


def compress(ctx: BuildContext, student: nn.Module, teachers: Teachers, calibration: Calibration,
             stage: Path) -> Compressed:
    unpruned, pruning = None, None
    if ctx.options.prune:
        with ctx.timed("prune"):
            pruned, pruning = prune(ctx, student, teachers)
        if pruning.kept_step:
            unpruned, student = student, pruned
    plans = {}
    if "int8" in ctx.target.runtime.precisions:
        with ctx.timed("quantize"):
            for fmt in ctx.target.runtime.formats:
                plans[fmt] = plan_int8(ctx, fmt, student, teachers, calibration, stage)
    return Compressed(student, unpruned, pruning, plans)
