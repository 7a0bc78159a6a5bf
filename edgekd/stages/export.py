"""Stage: every format x precision the target allows, each checked for parity in its real runtime.

Alongside the student's artifacts: the teacher in fp32 in every format the student ships in (so "speed vs
teacher" compares models, not runtimes) and, when pruning changed the student, the unpruned student in the
primary format (the stage waterfall). Parity and the validation accuracy the precision choice uses are measured
here on calibration and validation inputs; the test split is left to the benchmark, which scores it once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from edgekd.backends import Artifact, Calibration, check_parity, parity_failure
from edgekd.compat import check_compatibility, enforce_full_delegation, list_operators, load_delegate
from edgekd.errors import EdgekdError
from edgekd.formats import FORMATS, get_format
from edgekd.models.teachers import predict_logits
from edgekd.runner import load_session
from edgekd.stages.compress import Compressed, backend_for
from edgekd.stages.context import BuildContext
from edgekd.stages.teacher import Teachers


@dataclass
class Built:
    """One artifact of the run, what it is for, and what was checked about it."""

    artifact: Artifact
    role: str  # student | teacher-reference | unpruned-reference
    checks: dict[str, Any] = field(default_factory=dict)  # parity, operators, delegate
    val_accuracy: float | None = None
    reference: str = "student"  # the PyTorch model its parity is checked against (student, qat, teacher)


def operator_report(ctx: BuildContext, artifact: Artifact) -> dict[str, Any]:
    """Operators of the artifact and, for the target's delegate, which would fall back to the CPU."""
    delegate = ctx.target.runtime.delegate
    if delegate == "none" or load_delegate(delegate).format != artifact.format:
        return {"operators": list_operators(artifact.path)}
    compat = check_compatibility(artifact.path, delegate)
    if ctx.target.runtime.require_full_delegation:
        enforce_full_delegation(compat)
    return {"operators": compat.operators, "delegate": {"name": delegate, "fallback": compat.fallback,
                                                        "fully_delegated": compat.fully_delegated,
                                                        "min_android_api": compat.min_api}}


def _checked(ctx: BuildContext, artifact: Artifact, model: nn.Module, inputs: np.ndarray) -> tuple[dict, float]:
    """Parity with the PyTorch model on ``inputs`` and accuracy on the validation split, in the real runtime."""
    parity = check_parity(artifact, predict_logits(model, inputs), inputs, threads=1)
    if not parity.passed:
        raise parity_failure(artifact, parity)
    x, y = ctx.data.x_val, ctx.data.y_val
    val = float((load_session(str(artifact.path), 1, artifact.precision).run_batched(x).argmax(1) == y).mean())
    return parity.to_dict(), val


def shipped_combinations(ctx: BuildContext) -> Iterator[tuple[str, Any, str, str]]:
    """(format, backend, suffix, precision) for every format x precision the target ships, fp32 always first."""
    for fmt in ctx.target.runtime.formats:
        backend, suffix = backend_for(ctx, fmt), get_format(fmt).suffix
        for precision in dict.fromkeys(["fp32", *ctx.target.runtime.precisions]):
            if precision not in backend.precisions:
                raise EdgekdError(f"format '{fmt}' cannot take precision '{precision}'",
                                  f"use one of {backend.precisions} in the target's runtime.precision")
            yield fmt, backend, suffix, precision


def student_artifacts(ctx: BuildContext, compressed: Compressed, calibration: Calibration,
                      stage: Path) -> list[Built]:
    inputs = np.concatenate([calibration.x[:128], ctx.data.x_val[:512]])
    sample = ctx.data.x_val[:1]
    built = []
    for fmt, backend, suffix, precision in shipped_combinations(ctx):
        t0 = time.perf_counter()
        plan = compressed.int8.get(fmt) if precision == "int8" else None
        artifact = plan.artifact if plan else backend.export(compressed.student, sample,
                                                             stage / f"model_{precision}{suffix}", precision,
                                                             calibration if precision == "int8" else None)
        model = plan.model if plan else compressed.student
        parity, val = _checked(ctx, artifact, model, inputs)
        ctx.say(f"export: {artifact.path.name} ({fmt} {precision}) in {time.perf_counter() - t0:.1f}s, parity "
                f"max|diff| {parity['max_abs_diff']:.2e}, top-1 {parity['top1_agreement']:.2%}, val {val:.4f}")
        built.append(Built(artifact, "student", {"parity": parity, **operator_report(ctx, artifact)}, val,
                           plan.reference if plan else "student"))
    return built


def reference_artifacts(ctx: BuildContext, compressed: Compressed, teachers: Teachers, stage: Path) -> list[Built]:
    """The teacher in fp32 in every format the student ships in; the unpruned student in the primary format."""
    sample, inputs = ctx.data.x_val[:1], ctx.data.x_val[:256]
    built = []
    for fmt in _teacher_formats(ctx, teachers):
        backend, suffix = backend_for(ctx, fmt), get_format(fmt).suffix
        try:
            artifact = backend.export(teachers.primary.model, sample, stage / f"teacher_fp32{suffix}", "fp32", None)
        except Exception as exc:  # noqa: BLE001 - only a non-PyTorch teacher gets here (see _teacher_formats)
            if not _foreign(teachers):
                raise
            ctx.say(f"export: the {teachers.primary.source} teacher has no {fmt} form "
                    f"({type(exc).__name__}); it is measured in onnxruntime instead")
            continue
        parity, val = _checked(ctx, artifact, teachers.primary.model, inputs)
        built.append(Built(artifact, "teacher-reference", {"parity": parity}, val, "teacher"))
    if compressed.unpruned is not None:
        fmt = ctx.target.runtime.format
        artifact = backend_for(ctx, fmt).export(compressed.unpruned, sample,
                                                stage / f"unpruned_fp32{get_format(fmt).suffix}", "fp32", None)
        built.append(Built(artifact, "unpruned-reference", {}, None, "unpruned student"))
    return built


def _foreign(teachers: Teachers) -> bool:
    return bool(getattr(teachers.primary.model, "logits_only", False))


def _teacher_formats(ctx: BuildContext, teachers: Teachers) -> list[str]:
    """The student's formats; an ONNX/scikit-learn teacher is also (and first) measured as the ONNX it is.

    Such a teacher converts to other formats only when their converters read ONNX (the rows' ``onnx_teacher``:
    OpenVINO does, for neural graphs; tree ensembles have no OpenVINO form), so its ONNX reference guarantees a
    measured teacher.
    """
    formats = list(ctx.target.runtime.formats)
    if _foreign(teachers):
        as_is = [name for name, spec in FORMATS.items() if spec.onnx_teacher == "as-is"]
        formats = [*as_is, *(f for f in formats if get_format(f).onnx_teacher == "converts")]
    return formats
