"""Target profiles: the hardware, runtime and budgets that size and judge a student.

A profile is a YAML file (``targets/*.yaml`` ship with edgekd; a user's own file works by path). The schema
is strict (unknown keys are errors) so a typo in a budget never silently disables a check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekd.errors import EdgekdError

FORMATS = ("onnx", "openvino", "tflite")
Precision = Literal["fp32", "fp16", "dynamic_int8", "int8"]
Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceSpec(_Strict):
    """The device, and how to recognise it (``edgekd.device_identity``): a run counts as measured on the target
    only when the machine matches these fields, or when the user declares it (``edgekd bench --as-target``)."""

    arch: Literal["x86_64", "aarch64", "armv7l"]
    cores: PositiveInt
    memory_mb: PositiveInt
    accelerator: str = "none"
    cpu: str = ""  # a description for people; matching uses cpu_pattern
    # Regex (case-insensitive, re.search) over the runner's machine.cpu, machine.board (the device-tree model on
    # ARM boards) and machine.cpu_cores (ARM core names): e.g. "Raspberry Pi 4 Model B".
    cpu_pattern: str | None = None
    # CPU feature flags the device has (x86 /proc/cpuinfo names, e.g. avx2): a machine without one is not it.
    cpu_flags: list[str] = []
    # MemTotal is below the nominal RAM (kernel, firmware and GPU carve-outs): how far it may differ, in %.
    memory_tolerance_pct: Annotated[float, Field(ge=0, le=100)] = 15.0
    # The profile stands for a class of machines (e.g. "any x86-64 with AVX2"), not one device: any machine of
    # this arch with cpu_flags (and cpu_pattern, if set) counts; cores and memory are not compared.
    generic: bool = False

    @field_validator("cpu_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            import re

            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a valid regular expression ({exc})") from None
        return value


class RuntimeSpec(_Strict):
    format: Literal["onnx", "openvino", "tflite"]
    precision: Precision | list[Precision] = "int8"
    threads: PositiveInt = 1
    also: list[Literal["onnx", "openvino", "tflite"]] = []
    # int8 graph inputs/outputs (full-integer models for NPUs/DSPs that reject float I/O).
    integer_io: bool = False
    # The accelerator/delegate whose operator list is checked (edgekd/data_files/ops_<delegate>.yaml).
    delegate: Literal["none", "xnnpack", "nnapi", "tensorrt"] = "none"
    # Fail the build when an operator would fall back from the target's delegate to the CPU.
    require_full_delegation: bool = False

    @property
    def precisions(self) -> tuple[str, ...]:
        return (self.precision,) if isinstance(self.precision, str) else tuple(self.precision)

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.format, *self.also]))


class StudentBudget(_Strict):
    max_params: PositiveInt
    max_macs: PositiveInt
    channel_multiple: PositiveInt = 8
    # Cap relative to the teacher as well: an absolute budget sized for 224x224 inputs says nothing on 8x8 digits.
    max_teacher_macs_ratio: Annotated[float, Field(gt=0, le=1)] = 0.2
    family: Literal["auto", "mobilenetv2", "mlp"] = "auto"


class Budgets(_Strict):
    """Checked by ``edgekd gate``. Device budgets (latency, memory) only count when measured on the device."""

    latency_ms_p95: Positive | None = None
    peak_memory_mb: Positive | None = None
    model_size_kb: Positive | None = None
    min_accuracy_ratio: Annotated[float, Field(gt=0, le=1.5)] | None = None
    max_quantization_drop: Annotated[float, Field(ge=0, le=1)] | None = None
    # Hardware-independent: artifact p50 / teacher p50 measured in the same run on the same host.
    max_latency_ratio_to_teacher: Positive | None = None


class CalibrationSpec(_Strict):
    samples: PositiveInt = 300


class TargetProfile(_Strict):
    name: str
    description: str
    sources: list[str] = Field(min_length=1, description="where the device figures come from")
    device: DeviceSpec
    runtime: RuntimeSpec
    student_budget: StudentBudget
    budgets: Budgets
    calibration: CalibrationSpec = CalibrationSpec()
    path: str = ""

    @field_validator("name")
    @classmethod
    def _name_is_slug(cls, value: str) -> str:
        if not value or any(c in value for c in "/\\ "):
            raise ValueError("must be a non-empty name without spaces or slashes")
        return value


def builtin_targets_dir() -> Path:
    """``targets/`` beside the package (a source checkout or editable install), or $EDGEKD_TARGETS_DIR."""
    env = os.environ.get("EDGEKD_TARGETS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "targets"


def list_targets() -> list[TargetProfile]:
    return [load_target(p) for p in sorted(builtin_targets_dir().glob("*.yaml"))]


def _known_names() -> list[str]:
    return sorted(p.stem for p in builtin_targets_dir().glob("*.yaml"))


def load_target(name_or_path: str | os.PathLike[str]) -> TargetProfile:
    """Load a shipped target by name (``rpi4``) or any YAML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix in (".yaml", ".yml") or os.sep in text or path.exists()):
        path = builtin_targets_dir() / f"{text}.yaml"
        if not path.exists():
            raise EdgekdError(
                f"unknown target '{text}'",
                f"use one of: {', '.join(_known_names())}, or the path to your own YAML file",
            )
    if not path.is_file():
        raise EdgekdError(f"target file not found: {path}", "check the path, or use a shipped target name")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise EdgekdError(f"target file {path} is not valid YAML{where}", "fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise EdgekdError(f"target file {path} must contain a mapping of fields", "see targets/x86-cpu.yaml")
    try:
        return TargetProfile(**{**raw, "path": str(path)})
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc'])}': {_describe(err)}" for err in exc.errors()
        )
        raise EdgekdError(
            f"target file {path} is invalid: {problems}",
            "correct the named field(s); see targets/x86-cpu.yaml for a complete example",
        ) from None


def _describe(err: dict) -> str:
    if err["type"] == "missing":
        return "is required but missing"
    if err["type"] == "extra_forbidden":
        return "is not a known field"
    return err["msg"].lower()


def describe_target(target: TargetProfile) -> str:
    """A human-readable summary for ``edgekd targets show``."""
    return yaml.safe_dump(target.model_dump(mode="json", exclude={"path"}), sort_keys=False)
