"""Target profiles: the hardware, runtime and budgets that size and judge a student.

A profile is a YAML file. The shipped ones live inside the package (``edgekd/data_files/targets/``, read with
``importlib.resources``, so a wheel and a source checkout behave the same); ``$EDGEKD_TARGETS_DIR``, a search path
of directories, adds a team's own profiles by name; any file works by path. The schema is strict (unknown keys are
errors) so a typo in a budget never silently disables a check.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgekd.errors import EdgekdError
from edgekd.formats import EXTRA_INCLUDES, FORMATS, extra_modules, get_format
from edgekd.io import load_yaml
from edgekd.schema import TARGET_NAME_PATTERN

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

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
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a valid regular expression ({exc})") from None
        return value


class RuntimeSpec(_Strict):
    format: str  # a registered format (edgekd.formats): onnx, openvino, tflite, or one a plugin registered
    precision: Precision | list[Precision] = "int8"
    threads: PositiveInt = 1
    also: list[str] = []
    # int8 graph inputs/outputs (full-integer models for NPUs/DSPs that reject float I/O).
    integer_io: bool = False
    # The accelerator/delegate whose operator list is checked (edgekd/data_files/ops_<delegate>.yaml) and that
    # `edgekd bench --adb` runs with. NNAPI is deprecated from Android 15: gpu (LiteRT's GPU delegate) succeeds it.
    delegate: Literal["none", "xnnpack", "nnapi", "gpu", "tensorrt"] = "none"
    # Fail the build when an operator would fall back from the target's delegate to the CPU.
    require_full_delegation: bool = False

    @field_validator("format")
    @classmethod
    def _registered_format(cls, value: str) -> str:
        return _check_format(value)

    @field_validator("also")
    @classmethod
    def _registered_formats(cls, value: list[str]) -> list[str]:
        return [_check_format(v) for v in value]

    @property
    def usable_threads(self) -> int:
        """The target's threads, capped by this host's cores (more threads than cores only adds contention)."""
        return min(self.threads, os.cpu_count() or 1)

    @property
    def precisions(self) -> tuple[str, ...]:
        return (self.precision,) if isinstance(self.precision, str) else tuple(self.precision)

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.format, *self.also]))


def _check_format(value: str) -> str:
    if value not in FORMATS:
        raise ValueError(f"unknown format '{value}' (known: {', '.join(FORMATS)})")
    return value


class StudentBudget(_Strict):
    max_params: PositiveInt
    max_macs: PositiveInt | None = None  # None: no MAC limit (a latency budget sizes the student instead)
    # Latency of the student on the target's runtime, in ms at ``latency_percentile``: measured per candidate (on
    # the device with --device, else on this host as a proxy) before any training (edgekd.selection).
    latency_ms: Positive | None = None
    latency_percentile: Literal[50, 90, 95, 99] = 95
    # Candidates are selected under latency budget x headroom: selection times random weights calibrated on a few
    # batches; the shipped model has trained weights, may keep float layers for the accuracy contract, and is timed
    # later on a host that drifts. benchmarks/latency_selection.json records the drift measured from selection to
    # the shipped artifact (up to +18 % at p95 near OpenVINO's per-call floor); 0.8 absorbs +25 %.
    latency_headroom: Annotated[float, Field(gt=0, le=1)] = 0.8
    channel_multiple: PositiveInt = 8
    # Cap relative to the teacher as well: an absolute budget sized for 224x224 inputs says nothing on 8x8 digits.
    max_teacher_macs_ratio: Annotated[float, Field(gt=0, le=1)] = 0.2
    family: str = "auto"  # a registered student family (edgekd.models), or auto: the one made for the data


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


TARGET_NAME = re.compile(TARGET_NAME_PATTERN)


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
        # The name becomes a directory (the default --out runs/<name>) and a bundle name: '.', '..', slashes,
        # spaces and control characters would point those somewhere else.
        if not TARGET_NAME.fullmatch(value):
            raise ValueError("must be a short slug: a letter or digit, then letters, digits, '.', '_' or '-' "
                             "(at most 64; never '.' or '..')")
        return value


TARGETS_PATH_ENV = "EDGEKD_TARGETS_DIR"
YAML_SUFFIXES = (".yaml", ".yml")
SHIPPED = "shipped"


def data_file(*parts: str) -> Traversable:
    """A file shipped in ``edgekd/data_files`` (operator lists, target profiles), wherever the package lives."""
    return resources.files("edgekd").joinpath("data_files", *parts)


def shipped_targets_dir() -> Traversable:
    return data_file("targets")


def targets_search_path() -> list[Path]:
    """The directories in ``$EDGEKD_TARGETS_DIR`` (``os.pathsep``-separated), earliest first."""
    dirs = []
    for entry in os.environ.get(TARGETS_PATH_ENV, "").split(os.pathsep):
        if not entry:
            continue
        path = Path(entry).expanduser()
        if not path.is_dir():
            raise EdgekdError(f"${TARGETS_PATH_ENV} names '{entry}', which is not a directory",
                              f"set ${TARGETS_PATH_ENV} to directories of target YAML files, separated by "
                              f"'{os.pathsep}', or unset it")
        dirs.append(path)
    return dirs


@dataclass(frozen=True)
class TargetSource:
    """Where a target name resolves to: ``origin`` is ``shipped`` or the search-path directory."""

    name: str
    file: Traversable | Path
    origin: str
    overrides_shipped: bool = False


def _yaml_files(directory: Traversable | Path) -> list[Traversable | Path]:
    files = [f for f in directory.iterdir() if f.name.lower().endswith(YAML_SUFFIXES) and f.is_file()]
    return sorted(files, key=lambda f: f.name)


def _stem(file: Traversable | Path) -> str:
    return file.name.rsplit(".", 1)[0]


def available_targets() -> dict[str, TargetSource]:
    """Every name ``--target`` accepts. The search path comes first (an earlier directory wins), so a team can
    override a shipped profile by giving its file the same name; ``edgekd targets list`` shows which one wins."""
    shipped = {_stem(f): f for f in _yaml_files(shipped_targets_dir())}
    found: dict[str, TargetSource] = {}
    for directory in targets_search_path():
        for file in _yaml_files(directory):
            name = _stem(file)
            if name not in found:
                found[name] = TargetSource(name, file, str(directory), overrides_shipped=name in shipped)
    for name, file in shipped.items():
        found.setdefault(name, TargetSource(name, file, SHIPPED))
    return dict(sorted(found.items()))


def list_targets() -> list[TargetProfile]:
    return [_parse(source.file) for source in available_targets().values()]


def looks_like_path(text: str) -> bool:
    """A target argument is a path only when it clearly says so: a separator or a YAML suffix. A bare name is
    always a profile name, so a run directory named after its target (``runs/x86-cpu/``) never shadows it."""
    separators = {"/", os.sep, os.altsep} - {None}
    return any(sep in text for sep in separators) or text.lower().endswith(YAML_SUFFIXES)


def resolve_target(name_or_path: str | os.PathLike[str]) -> Traversable | Path:
    """The file a ``--target`` argument names: a path (which must be a file) or a shipped/search-path name."""
    text = os.fspath(name_or_path)
    if looks_like_path(text):
        path = Path(text).expanduser()
        if not path.is_file():
            what = "is a directory, not a target file" if path.is_dir() else "not found"
            raise EdgekdError(f"target file {what}: {text}",
                              "pass the path of a target YAML file, or a target name (edgekd targets list)")
        return path
    source = available_targets().get(text)
    if source is None:
        hint = f"; to load the file '{text}' here, pass ./{text}" if Path(text).is_file() else ""
        raise EdgekdError(
            f"unknown target '{text}'",
            f"use one of: {', '.join(available_targets())} (edgekd targets list), or the path to your own YAML "
            f"file; ${TARGETS_PATH_ENV} adds directories of profiles by name{hint}",
        )
    return source.file


def load_target(name_or_path: str | os.PathLike[str]) -> TargetProfile:
    """Load a target by name (``rpi4``, or a file in ``$EDGEKD_TARGETS_DIR``) or any YAML file by path."""
    return _parse(resolve_target(name_or_path))


def _parse(file: Traversable | Path) -> TargetProfile:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgekdError(f"cannot read target file {file}: {getattr(exc, 'strerror', None) or exc}",
                          "check the file") from None
    raw = load_yaml(text, f"target file {file}", "fix the YAML syntax")
    if not isinstance(raw, dict):
        raise EdgekdError(f"target file {file} must contain a mapping of fields",
                          "see `edgekd targets show x86-cpu` for a complete example")
    try:
        return TargetProfile(**{**raw, "path": str(file)})
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc'])}': {_describe(err)}" for err in exc.errors()
        )
        raise EdgekdError(
            f"target file {file} is invalid: {problems}",
            "correct the named field(s); see `edgekd targets show x86-cpu` for a complete example",
        ) from None


# ------------------------------------------------------------------------------------------------ extras
def required_extras(target: TargetProfile) -> list[str]:
    """The fewest extras that build every format the target ships (an extra another one includes is dropped)."""
    needed = list(dict.fromkeys(get_format(fmt).extra.name for fmt in target.runtime.formats
                                if get_format(fmt).extra is not None))
    covered = {sub for extra in needed for sub in EXTRA_INCLUDES.get(extra, ())}
    return [extra for extra in needed if extra not in covered]


def install_command(extras: list[str]) -> str:
    return f"pip install 'edgekd[{','.join(extras)}]'"


def _absent_modules(extra: str) -> list[str]:
    return [module for module in extra_modules(extra) if importlib.util.find_spec(module) is None]


def missing_extras(target: TargetProfile) -> list[str]:
    """The target's extras with a module not installed (``find_spec``: cheap, nothing is imported)."""
    return [extra for extra in required_extras(target) if _absent_modules(extra)]


def require_extras(target: TargetProfile) -> None:
    """Stop a build before any data loading or training when the target's runtimes are not installed."""
    missing = missing_extras(target)
    if missing:
        absent = [module for extra in missing for module in _absent_modules(extra)]
        raise EdgekdError(
            f"target '{target.name}' ships {', '.join(target.runtime.formats)} artifacts, which need "
            f"{', '.join(absent)} (not installed)",
            install_command(missing),
        )


def _describe(err: dict) -> str:
    if err["type"] == "missing":
        return "is required but missing"
    if err["type"] == "extra_forbidden":
        return "is not a known field"
    return err["msg"].lower()


def describe_target(target: TargetProfile) -> str:
    """``edgekd targets show``: where the profile comes from and what to install (as comments), then the profile
    itself as YAML, so the output is a valid starting point for a team's own file."""
    extras = required_extras(target)
    missing = missing_extras(target)
    state = f"  # not installed here: {', '.join(missing)}" if missing else ""
    header = f"# file: {target.path}\n# install: {install_command(extras)}{state}\n"
    return header + yaml.safe_dump(target.model_dump(mode="json", exclude={"path"}), sort_keys=False)
