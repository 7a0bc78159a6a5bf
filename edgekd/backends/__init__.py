"""Export backends: the build-host half of each format (the runtime half is its runner session).

A backend turns a PyTorch module into an artifact file its runtime loads, lists the artifact's operators, and
searches for an int8 model that keeps the accuracy contract. Which backends exist is the format registry's
business (``edgekd.formats``); parity is checked the same way for every format, by running the artifact in its
real runtime through the runner's session.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

from edgekd.compress.accuracy_aware import AccuracyAwareResult, QuantJob
from edgekd.compress.calibration import Calibration as Calibration  # re-exported: every backend takes one
from edgekd.errors import ContractError, MissingDependencyError
from edgekd.formats import get_format
from edgekd.runner import RunnerError, load_session
from edgekd.targets import TargetProfile


@dataclass
class Artifact:
    path: Path
    format: str
    precision: str
    files: list[Path]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def runtime(self) -> str:
        return get_format(self.format).runtime


class Backend(Protocol):
    """What every format's backend offers the build (see ``edgekd.formats`` for the registry of them)."""

    name: str
    precisions: tuple[str, ...]

    @classmethod
    def from_target(cls, target: TargetProfile) -> Backend:
        """The backend configured from the target's runtime (threads, integer I/O...)."""

    def export(
        self, model: nn.Module, sample: np.ndarray, path: Path, precision: str, calibration: Calibration | None
    ) -> Artifact: ...

    def list_operators(self, path: Path) -> dict[str, int]:
        """Operator type -> count, read with the format's own tooling (for delegate compatibility)."""

    def accuracy_aware_int8(self, job: QuantJob) -> AccuracyAwareResult:
        """An int8 artifact meeting ``job.contract`` on the validation split with the fewest float layers;
        ContractError when none does. Formats without such a search raise ContractError naming the plain drop."""


def require(module: str, package: str, extra: str, purpose: str):
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(package, extra, purpose) from None


# Parity contract: fp32 within 1e-4 of the logits' scale, fp16 within 1e-2; int8 by top-1 agreement.
PARITY_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
MIN_INT8_TOP1_AGREEMENT = 0.98


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    top1_agreement: float
    tolerance: float | None
    logit_scale: float
    samples: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_abs_diff": self.max_abs_diff,
            "top1_agreement": self.top1_agreement,
            "tolerance": self.tolerance,
            "logit_scale": self.logit_scale,
            "samples": self.samples,
            "passed": self.passed,
        }


def check_parity(artifact: Artifact, reference: np.ndarray, inputs: np.ndarray, threads: int = 1) -> Parity:
    """Run the artifact in its real runtime and compare it with the PyTorch model's outputs."""
    try:
        outputs = load_session(str(artifact.path), threads, artifact.precision).run_batched(inputs)
    except RunnerError as exc:
        raise ContractError(f"artifact {artifact.path.name} does not run in {artifact.runtime}: {exc}") from None
    scale = float(max(1.0, np.abs(reference).max()))
    diff = float(np.abs(outputs - reference).max())
    agree = float((outputs.argmax(1) == reference.argmax(1)).mean())
    tol_rel = PARITY_TOLERANCE.get(artifact.precision)
    tol = None if tol_rel is None else tol_rel * scale
    passed = bool(np.isfinite(outputs).all()) and (
        diff <= tol if tol is not None else agree >= MIN_INT8_TOP1_AGREEMENT
    )
    return Parity(diff, agree, tol, scale, len(inputs), passed)


def parity_failure(artifact: Artifact, parity: Parity) -> ContractError:
    rule = (
        f"max abs diff must be <= {parity.tolerance:.3g}"
        if parity.tolerance is not None
        else f"top-1 agreement must be >= {MIN_INT8_TOP1_AGREEMENT:.0%}"
    )
    return ContractError(
        f"artifact {artifact.path.name} ({artifact.format} {artifact.precision}) breaks parity with the PyTorch "
        f"student: max abs diff {parity.max_abs_diff:.3g}, top-1 agreement {parity.top1_agreement:.2%} "
        f"over {parity.samples} inputs ({rule}); it was not shipped",
        "report this conversion bug; try another precision or format in the target file" if parity.tolerance
        is not None else "int8 rounding flips answers the float student is unsure of: train it longer (more epochs "
        "or data) or ship fp16/fp32 in the target file; if a well-trained student fails, report it as a bug",
    )
