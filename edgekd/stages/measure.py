"""Stage: benchmark every artifact with the standalone runner in a fresh process (no torch in it), as on a device.

This is where the test split is scored, once: the runner measures latency, memory and accuracy on eval.npz (the
test inputs, labels and the PyTorch models' recorded outputs). Each student artifact is also timed against its
teacher artifact interleaved in the same process (the runner's ``--versus``): the ratio the gate judges.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from edgekd.bench import run_local
from edgekd.schema import RunnerResult
from edgekd.stages.context import BuildContext
from edgekd.stages.export import Built

# A student's timing against its teacher repeats in this many fresh processes: the spread between processes is what
# a later gate against this report as a stored baseline (``edgekd gate --baseline``) needs to judge a slowdown.
TIMING_PROCESSES = 3


@dataclass
class Measured:
    built: Built
    entry: dict[str, Any]  # its manifest entry (sha256, files, details)
    result: dict[str, Any]  # the runner's JSON


def teacher_format_for(fmt: str, teacher_formats: Iterable[str], primary: str) -> str:
    """The teacher artifact a student artifact is compared with: same runtime, else the target's, else ONNX.

    (A teacher given as ONNX or scikit-learn may exist only in onnxruntime.)"""
    available = list(teacher_formats)
    return next((f for f in (fmt, primary, "onnx") if f in available), available[0])


def measure(ctx: BuildContext, stage: Path, built: list[Built], manifest: dict[str, Any],
            eval_path: Path) -> list[Measured]:
    entries = {e["path"]: e for e in manifest["artifacts"]}
    plugins = [stage / p["path"] for p in manifest.get("session_plugins", [])]
    teachers = {b.artifact.format: b.artifact.path for b in built if b.role == "teacher-reference"}
    out = []
    for b in tqdm(built, desc="benchmark", unit="artifact", disable=not ctx.options.progress, leave=False):
        versus = None
        if b.role == "student" and teachers:
            versus = teachers[teacher_format_for(b.artifact.format, teachers, ctx.target.runtime.format)]
        result = run_local(b.artifact.path, eval_path, ctx.options.runs, ctx.options.warmup, ctx.threads,
                           plugins=plugins, versus=versus, processes=TIMING_PROCESSES if versus else 1)
        RunnerResult.model_validate(result)  # the runner's numbers are checked like a device's would be
        out.append(Measured(b, entries[b.artifact.path.name], result))
    return out
