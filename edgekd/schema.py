"""Typed, versioned schemas of every file edgekd writes and reads back: report.json, manifest.json and the
runner's result JSON. Writers validate before writing; readers validate before trusting a single number.

What validation guarantees to a reader (the gate above all): numbers are finite (no NaN/inf), sizes, counts and
latencies are non-negative, accuracies lie in [0, 1], sha256 values are 64 hex digits, file names are plain names
beside the file that lists them, and a shipped artifact always has an accuracy (a missing value is a failure,
never a pass). Objects whose keys are produced by other modules (training summaries, pruning, per-format details)
stay open; the fields the gate and the renderers read are declared. ``docs/schema/*.schema.json`` is generated
from these models (``python -m edgekd.schema``) and a test keeps it current.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from edgekd.errors import EdgekdError
from edgekd.io import dumps, read_json_object

REPORT_SCHEMA_VERSION = 2
MANIFEST_SCHEMA_VERSION = 1

NonNeg = Annotated[float, Field(ge=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# A target name becomes a directory (runs/<name>, bundle-<name>): a slug, never '.', '..' or a path.
TARGET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
TargetName = Annotated[str, Field(pattern=TARGET_NAME_PATTERN)]


def _plain_name(value: str) -> str:
    if not value or os.path.basename(value) != value or value in (".", ".."):
        raise ValueError(f"'{value}' is not a plain file name (files are listed beside the manifest)")
    return value


PlainName = Annotated[str, AfterValidator(_plain_name)]


# strict: a number written as text ("0.99") is refused, never coerced: readers use the JSON values as they are.
class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)


# ============================================================================================ shared
class Latency(_Open):
    p50: NonNeg
    p90: NonNeg
    p95: NonNeg
    p99: NonNeg
    mean: NonNeg
    std: NonNeg


class ProcessQuantiles(_Open):
    """The quantiles the gate compares, of one process of a run measured in several (the runner's --processes)."""

    p5: NonNeg
    p50: NonNeg
    p95: NonNeg
    runs: NonNegInt = 0


class LatencyDetail(Latency):
    """The runner's full timing record: raw samples and the block medians that measure noise."""

    samples_ms: list[NonNeg] = []
    block_medians: list[NonNeg] = []
    noise_pct: NonNeg = 0.0
    runs: NonNegInt = 0
    blocks: NonNegInt = 0  # the gate sizes a baseline's noise by it
    processes: list[ProcessQuantiles] = []  # the between-process spread a stored baseline's gate row needs


class Machine(_Open):
    arch: str
    cpu: str = ""
    cores: NonNegInt | None = None
    cpu_flags: list[str] | None = None  # device_identity compares them with a target's: names, never other values


# ============================================================================================ runner result
class VersusProcess(_Open):
    """One fresh process of an interleaved timing over several (--processes): both models' samples."""

    first: Literal["artifact", "versus"]
    ratios: list[NonNeg]
    samples_ms: list[NonNeg]
    versus_samples_ms: list[NonNeg]


class VersusTiming(_Open):
    """This artifact timed against another (the teacher), interleaved in one process (runner.compare_latency)."""

    artifact: str
    format: str
    ratio: NonNeg
    ratios: list[NonNeg]
    pairs: Annotated[int, Field(ge=1)]
    runs_per_block: Annotated[int, Field(ge=1)]
    p50_ms: NonNeg
    versus_p50_ms: NonNeg
    how: str
    sha256: Sha256 | None = None
    sha256_verified: bool = False
    processes: list[VersusProcess] = []  # with --processes: the gate's same-job baseline judges these


class LatencyVersusTeacher(_Closed):
    """The gate's max_latency_ratio_to_teacher value: student / teacher latency, interleaved in one process."""

    ratio: NonNeg
    ratio_interval_95: tuple[NonNeg, NonNeg]
    pairs: Annotated[int, Field(ge=1)]
    teacher_artifact: str
    p50_ms: NonNeg  # both p50s from the interleaved timing (the row's latency_ms is its own, separate run)
    teacher_p50_ms: NonNeg
    how: str


class RunnerResult(_Open):
    """One artifact measured by runner.py (on this host or a device)."""

    runner_version: str
    artifact: str
    format: str
    precision: str | None = None
    sha256: Sha256 | None = None
    sha256_verified: bool = False
    inputs_sha256: Sha256 | None = None
    inputs_verified: bool = False
    runtime: dict[str, Any]
    machine: Machine
    threads: Annotated[int, Field(ge=1)]
    load_ms: NonNeg
    first_inference_ms: NonNeg
    latency_ms: LatencyDetail
    samples: NonNegInt = 0
    accuracy: Fraction | None = None
    agreement_with_teacher: Fraction | None = None
    per_class_accuracy: dict[str, Fraction] | None = None
    predictions: list[NonNegInt] | None = None
    peak_memory_mb: NonNeg | None = None
    memory: dict[str, Any] | None = None
    torch_imported: bool = False
    versus: VersusTiming | None = None


# ============================================================================================ manifest
class ManifestFile(_Closed):
    path: PlainName
    sha256: Sha256
    size_bytes: NonNegInt | None = None


class ManifestEntry(_Open):
    path: PlainName
    role: Literal["student", "teacher-reference", "unpruned-reference"]
    format: str
    precision: str
    runtime: str
    sha256: Sha256
    size_bytes: NonNegInt
    files: list[ManifestFile] = Field(min_length=1)

    @model_validator(mode="after")
    def _artifact_is_hashed(self) -> ManifestEntry:
        names = [f.path for f in self.files]
        if self.path not in names:
            raise ValueError(f"the files of {self.path} do not include the artifact itself")
        if self.files[names.index(self.path)].sha256 != self.sha256:
            raise ValueError(f"{self.path}: sha256 differs from its own file entry")
        return self


class SessionPlugin(_Closed):
    format: str
    path: PlainName
    sha256: Sha256


class Manifest(_Open):
    manifest_version: Literal[1] = 1
    edgekd_version: str
    target: TargetName
    input: dict[str, Any]
    output: dict[str, Any]
    normalization: dict[str, Any]
    classes: list[str]
    calibration: dict[str, Any]
    eval_inputs: ManifestFile
    session_plugins: list[SessionPlugin] = []
    preprocessing: dict[str, Any] | None = None
    tokenizer: dict[str, Any] | None = None  # text: vocab.txt + tokenizer.json, their sha256, the settings
    artifacts: list[ManifestEntry]


# ============================================================================================ report
class PreprocessTiming(_Open):
    p50: NonNeg


class Preprocess(_Open):
    """What the runner did itself from raw samples before inference (resize, crop, normalise, or tokenize)."""

    applies_to: str  # raw | source | text
    ms: PreprocessTiming
    max_abs_diff_vs_build: NonNeg  # against the inputs the build computed


class ArtifactRow(_Open):
    path: PlainName
    format: str
    precision: str
    runtime: str
    sha256: Sha256
    size_bytes: NonNegInt
    accuracy: Fraction | None
    val_accuracy: Fraction | None = None
    agreement_with_teacher: Fraction | None = None
    latency_ms: Latency
    latency_ms_detail: LatencyDetail | None = None
    peak_memory_mb: NonNeg | None = None
    predictions: list[NonNegInt] | None = None
    macs: NonNegInt
    params: NonNegInt
    shipped: bool
    reference: str = "student"
    reference_accuracy: Fraction | None = None
    speed_vs_fp32: NonNeg | None = None
    speed_vs_teacher: NonNeg | None = None
    teacher_p50_ms_same_runtime: NonNeg | None = None
    latency_vs_teacher: LatencyVersusTeacher | None = None
    parity: dict[str, Any] | None = None
    scheme: str | None = None  # ONNX int8: u8s8 | s8s8 | u8s7 | s8s7 (7-bit weights: onnxruntime's reduce_range)
    float_ops: list[str] | None = None  # TFLite int8: ops still computing in float (a text model's EMBEDDING_LOOKUP)
    precision_detail: str | None = None  # the precision shipped, in words, where int8 is not all-int8
    reduce_range: bool | None = None
    seven_bit_for_device: bool | None = None  # 7-bit because the target may be x86 without VNNI, not this host
    kernel_deviation: dict[str, NonNeg] | None = None  # per scheme tried: this host's int8 kernels vs the QDQ graph
    preprocess: Preprocess | None = None

    @model_validator(mode="after")
    def _shipped_is_measured(self) -> ArtifactRow:
        if self.shipped and self.accuracy is None:
            raise ValueError(f"{self.path} is shipped but has no accuracy: a missing value is a failure")
        return self


class TeacherFormatRow(_Open):
    path: PlainName
    runtime: str
    size_bytes: NonNegInt
    latency_ms: Latency
    peak_memory_mb: NonNeg | None = None
    accuracy: Fraction | None = None


class TeacherSection(_Open):
    source: str
    arch: str
    params: NonNegInt
    macs: NonNegInt
    accuracy: Fraction
    size_bytes: NonNegInt
    latency_ms: Latency
    peak_memory_mb: NonNeg | None = None
    by_format: dict[str, TeacherFormatRow]
    arch_config: dict[str, Any] | None = None  # a trained default teacher's --teacher-config


class CandidateLatency(_Open):
    p50: NonNeg
    p95: NonNeg
    noise_pct: NonNeg
    value: NonNeg  # at the selection's percentile
    source: Literal["measured", "cache"]


class SelectionCandidate(_Open):
    """One student the selection considered, and what became of it."""

    name: str
    family: str
    config: dict[str, Any]
    params: NonNegInt
    macs: NonNegInt
    latency_ms: CandidateLatency | None = None  # None: not timed (predicted only, or failed)
    predicted_ms: NonNeg | None = None
    capacity: float | None = None
    status: Literal["chosen", "accepted", "rejected"]
    reason: str


class PreflightCheck(_Open):
    name: str
    passed: bool
    reason: str
    seconds: NonNeg
    artifacts: list[dict[str, Any]]


class ShippedPrediction(_Closed):
    """What the selection expected of the shipped artifact against what the benchmark measured."""

    artifact: str
    percentile: int
    selection_ms: NonNeg | None  # the chosen candidate timed during selection (random weights)
    predicted_ms: NonNeg | None  # the NNLS predictor's value for it
    measured_ms: NonNeg
    error_pct: float | None  # (predicted - measured) / measured, %
    drift_pct: float | None = None  # (measured - selection_ms) / selection_ms, %: what the headroom must absorb
    stated_budget_ms: NonNeg | None = None
    meets_stated_budget: bool | None = None


class AccuracyScore(_Closed):
    rung: NonNegInt
    steps: NonNegInt
    val_accuracy: Fraction


class AccuracyCandidate(_Open):
    """One finalist of the accuracy search: its proxy accuracy at each rung it reached, its measured latency."""

    name: str
    family: str
    config: dict[str, Any]
    params: NonNegInt
    macs: NonNegInt
    why: str
    latency_ms: NonNeg | None = None
    status: Literal["chosen", "eliminated", "not trained"]
    proxy_accuracy: Fraction | None = None
    scores: list[AccuracyScore] = []
    step_ms: NonNeg | None = None
    train_s: NonNeg | None = None


class AccuracySearch(_Open):
    """``--selection auto``: the finalists ranked by a short distillation (``selection/accuracy_search.py``)."""

    ran: bool
    why: str
    rule: str
    share: Fraction  # of the build's expected time, at most
    finalists: NonNegInt
    val_samples: NonNegInt
    test_split: Literal["never read"]
    expected_build_s: NonNeg | None = None
    cap_s: NonNeg | None = None
    time_s: NonNeg
    pct_of_build: NonNeg | None = None
    candidates: list[AccuracyCandidate] = []


class Predictor(_Open):
    """The latency predictor the search fitted on its timings (``selection/predictor.py``)."""

    kind: str
    summary: str


# The fields a latency search always records: the renderers read them without a fallback.
_LATENCY_FIELDS = ("budget_ms", "percentile", "format", "precision", "measured_on", "measured", "reused", "time_s",
                   "predictor")


class Selection(_Open):
    """How the student was chosen (``edgekd.selection``, ``stages/student.py``); the report's section is assembled
    by ``stages/report.selection_section`` alone. In latency mode the search's fields are required."""

    mode: Literal["mac", "latency"]
    why: str
    format: str | None = None  # latency mode: the format x precision the candidates were timed as
    precision: str | None = None
    budget_source: str = "not recorded"  # which budget of the target: student_budget.latency_ms | budgets...
    predicted_only: NonNegInt | None = None  # candidates never timed (None: not recorded)
    predictor: Predictor | None = None
    mac_selected: str | None = None  # the MAC rule's student, when it was a finalist of the accuracy search
    budget_ms: NonNeg | None = None  # what candidates were selected under: stated_budget_ms x headroom
    stated_budget_ms: NonNeg | None = None  # what the shipped student must meet
    headroom: Annotated[float, Field(gt=0, le=1)] | None = None
    percentile: int | None = None
    measured_on: str | None = None
    host_proxy: bool | None = None
    measured: NonNegInt | None = None
    reused: NonNegInt | None = None
    time_s: NonNeg | None = None
    candidates: list[SelectionCandidate] = []
    preflight: list[PreflightCheck] = []
    shipped_prediction: ShippedPrediction | None = None
    accuracy: AccuracySearch | None = None
    chosen_by: Literal["mac", "latency", "accuracy"] | None = None  # the rule that chose the shipped student
    chosen_why: str | None = None

    @model_validator(mode="after")
    def _latency_search_is_recorded(self) -> Selection:
        missing = [f for f in _LATENCY_FIELDS if getattr(self, f) is None] if self.mode == "latency" else []
        if missing:
            raise ValueError(f"a latency selection must record {', '.join(missing)}")
        return self


class BudgetFit(_Open):
    """The budget the student was chosen under (``models.budget.StudentChoice.to_dict``)."""

    candidates_fitting: NonNegInt
    max_params: NonNegInt
    max_macs: NonNegInt | None = None  # None: no MAC limit
    rule: str = ""


class Distillation(_Open):
    """The KD run's summary (``distill.trainer.TrainResult.summary``): the fields report.md states."""

    loss_weights: dict[str, float]
    temperature: NonNeg
    best_epoch: NonNegInt
    epochs: NonNegInt
    teacher_time_share: NonNeg


class StudentSection(_Open):
    family: str
    config: dict[str, Any]
    params: NonNegInt
    macs: NonNegInt
    accuracy: Fraction
    accuracy_before_compression: Fraction | None = None
    accuracy_trained_alone: Fraction | None = None
    kd_gain: Annotated[float, Field(ge=-1, le=1)] | None = None
    macs_ratio_to_teacher: NonNeg | None = None
    budget_fit: BudgetFit
    distillation: Distillation
    selection: Selection | None = None


class StageRow(_Closed):
    stage: str
    artifact: str
    accuracy: Fraction | None
    params: NonNegInt
    macs: NonNegInt
    size_bytes: NonNegInt
    p50_ms: NonNeg


class MeasuredOn(Machine):
    is_target_device: bool
    threads: Annotated[int, Field(ge=1)]


class EvalInputs(_Closed):
    path: PlainName
    sha256: Sha256
    samples: NonNegInt


class TrainingOptimisations(_Closed):
    """Which training optimisations each run used (``edgekd/distill/fast.py``); [] means plain fp32 eager.

    ``enabled`` is false under ``--no-fast-train``. ``teacher`` is null when no teacher was trained in this build.
    ``side_by_side_threads``: torch threads per run when ``--baseline``'s KD and alone runs trained at once
    (``distill/side_by_side.py``); null when they trained one after the other.
    """

    enabled: bool
    cpu: str
    teacher: list[str] | None = None
    student_kd: list[str]
    student_alone: list[str] | None = None
    side_by_side_threads: PosInt | None = None


class GateCheck(_Open):
    """One budget row of the gate (``gate_rows.BudgetCheck``)."""

    name: str
    artifact: str | None = None
    measured: float | None = None
    budget: float | None = None
    unit: str = ""
    comparison: str = ""
    status: Literal["pass", "fail", "unverified"]
    device_bound: bool = False
    note: str = ""
    margin: float | None = None


class RegressionRow(_Open):
    """One metric of one shipped artifact against the baseline (``gate.RegressionCheck``)."""

    metric: str
    artifact: str
    baseline: float | None = None
    current: float | None = None
    unit: str = ""
    status: Literal["pass", "fail", "unverified"]
    threshold: str = ""
    noise: str = ""
    note: str = ""
    mdr_pct: float | None = None
    ratio_interval: tuple[float, float] | None = None
    ratio: float | None = None
    p_value: Fraction | None = None
    counts: dict[str, NonNegInt] | None = None
    change_pct: float | None = None


class Gate(_Open):
    """The gate's verdict on the report's own budgets (``gate.GateResult.to_dict``), recomputed by ``edgekd bench``
    when device results arrive. Rows older edgekd did not record default to empty."""

    passed: bool
    strict: bool = False
    violations: list[str] = []
    unverified: list[str] = []
    checks: list[GateCheck] = []
    baseline: str | None = None
    regressions: list[RegressionRow] = []


# A device row's latency: Latency's quantiles, each optional (the ones the runner reported; older entries hold fewer).
DeviceLatency = create_model("DeviceLatency", __base__=_Open,
                             **{name: (NonNeg | None, None) for name in Latency.model_fields})


class DeviceArtifact(_Open):
    """One of the report's artifacts measured on a device (``bench.device_entry``); the gate counts it only when its
    sha256 is the report's artifact's."""

    path: str
    format: str | None = None
    precision: str | None = None
    sha256: Sha256 | None = None
    sha256_verified: bool | None = None  # None: not recorded
    runtime: str | None = None
    latency_ms: DeviceLatency = DeviceLatency()  # latency_ms_detail stays open: device tools record less
    peak_memory_mb: NonNeg | None = None
    accuracy: Fraction | None = None


class DeviceMachine(Machine):
    is_target_device: bool = False  # not recorded: not the target device
    identity: dict[str, Any] | None = None  # which device_identity rule matched, with its reasons


class LeftOut(_Closed):
    path: str | None
    why: str


class DeviceResult(_Open):
    """One ``device_results[]`` entry: a device (or this host, or an emulator) and each artifact's numbers there."""

    remote: str
    measured_on: DeviceMachine
    measured_at: str = ""
    artifacts: list[DeviceArtifact] = []
    errors: list[str] = []
    left_out: list[LeftOut] = []


class TrainingRun(_Closed):
    """Where the students trained: torchrun's world size and backend (1 and null in one process), the KD run's
    device and precision (fp16 always with a GradScaler)."""

    world_size: PosInt
    backend: Literal["gloo", "nccl"] | None = None
    device: str
    precision: Literal["fp32", "bf16", "fp16"]


class Report(_Open):
    schema_version: int
    edgekd_version: str
    target: TargetName
    target_path: str = ""
    created: str
    measured_on: MeasuredOn
    data: dict[str, Any]
    eval_inputs: EvalInputs
    teacher: TeacherSection
    student: StudentSection
    calibration: dict[str, Any]
    pruning: dict[str, Any] | None = None
    artifacts: list[ArtifactRow] = Field(min_length=1)
    precision_choice: dict[str, str]
    stages: list[StageRow] = []
    stage_times_s: dict[str, NonNeg] = {}
    build_time_s: NonNeg | None = None
    training_optimisations: TrainingOptimisations | None = None
    training: TrainingRun | None = None
    gate: Gate | None = None  # None: not evaluated yet (the build sets it before publishing)
    device_results: list[DeviceResult] = []

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value < REPORT_SCHEMA_VERSION:
            raise ValueError(f"report schema_version {value} is older than the {REPORT_SCHEMA_VERSION} this edgekd "
                             "reads: rebuild it with this edgekd (`edgekd build`)")
        if value > REPORT_SCHEMA_VERSION:
            raise ValueError(f"report schema_version {value} is newer than the {REPORT_SCHEMA_VERSION} this edgekd "
                             "reads: upgrade edgekd (pip install -U edgekd)")
        return value

    @model_validator(mode="after")
    def _ships_something(self) -> Report:
        if not any(a.shipped for a in self.artifacts):
            raise ValueError("no artifact is marked shipped: there is nothing to gate or deploy")
        return self

    @property
    def shipped(self) -> list[ArtifactRow]:
        return [a for a in self.artifacts if a.shipped]


# ============================================================================================ I/O
SCHEMAS: dict[str, type[BaseModel]] = {"report": Report, "manifest": Manifest, "runner_result": RunnerResult}


def describe_errors(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate(kind: str, data: Any, label: str, fix: str) -> BaseModel:
    """Validate a decoded JSON value as ``kind``; any problem is one EdgekdError naming the field."""
    if kind == "report" and isinstance(data, dict) and "schema_version" not in data:
        raise EdgekdError(f"{label} has no schema_version: it was written by an older edgekd or is not a report",
                          "rebuild it with this edgekd (`edgekd build`)")

    try:  # as the JSON a reader sees: numpy values of a report still in memory become plain numbers first
        return SCHEMAS[kind].model_validate_json(dumps(data))
    except ValidationError as exc:
        raise EdgekdError(f"{label} is not a valid edgekd {kind.replace('_', ' ')}: {describe_errors(exc)}",
                          fix) from None


def read(kind: str, path: str | os.PathLike[str], label: str | None = None, fix: str = "") -> BaseModel:
    label = label or str(path)
    fix = fix or "pass a file written by this version of edgekd"
    return validate(kind, read_json_object(path, label, fix), f"{label}", fix)


def as_report(report: Report | dict[str, Any], label: str = "report") -> Report:
    """The model the gate and the renderers read: a ``Report`` as it is, a decoded report.json validated first."""
    if isinstance(report, Report):
        return report
    return validate("report", report, label, "rebuild it with this edgekd (`edgekd build`)")  # type: ignore[return-value]


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=False)


def write_schemas(folder: Path) -> list[Path]:
    """docs/schema/<kind>.schema.json for every file kind (regenerated by ``python -m edgekd.schema``)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, model in SCHEMAS.items():
        path = folder / f"{kind}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written


# docs/architecture.md's list of report.json keys sits between these lines, generated from docs/schema.
REPORT_KEYS_BEGIN = "<!-- report keys: generated from docs/schema/report.schema.json by `python -m edgekd.schema` -->"
REPORT_KEYS_END = "<!-- end of report keys -->"


def _shape(prop: dict[str, Any], defs: dict[str, Any], depth: int) -> str:
    """A property's keys in the doc's notation: ``{a, b?}`` for a declared object, ``[]`` for a list of them."""
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    prop = options[0] if len(options) == 1 else {}
    if prop.get("type") == "array":
        return "[]" + _shape(prop.get("items", {}), defs, depth)
    if isinstance(prop.get("additionalProperties"), dict) and "$ref" in prop["additionalProperties"]:
        return "{*: " + _shape(prop["additionalProperties"], defs, depth) + "}"  # keyed by name (e.g. by format)
    if "$ref" in prop and depth < 4:
        model = defs[prop["$ref"].rsplit("/", 1)[-1]]
        required = set(model.get("required", []))
        keys = [f"{name}{'' if name in required else '?'}{_shape(sub, defs, depth + 1)}"
                for name, sub in model.get("properties", {}).items()]
        return "{" + ", ".join(keys) + (", ..." if model.get("additionalProperties") else "") + "}"
    return ""


def report_keys_doc(schema: dict[str, Any]) -> str:
    """The report.json keys, one top-level key a line (``?``: optional, ``...``: open to more keys), from the
    generated JSON schema: what docs/architecture.md states can then never drift from what the code validates."""
    required, defs = set(schema["required"]), schema.get("$defs", {})
    lines = [f"  - `{name}{'' if name in required else '?'}{_shape(prop, defs, 1)}`"
             for name, prop in schema["properties"].items()]
    return "\n".join([REPORT_KEYS_BEGIN, *lines, REPORT_KEYS_END])


def write_report_keys(doc: Path, schema_file: Path) -> None:
    """Replace the generated block of ``doc`` with the keys of ``schema_file``."""
    text = doc.read_text(encoding="utf-8")
    start, end = text.index(REPORT_KEYS_BEGIN), text.index(REPORT_KEYS_END) + len(REPORT_KEYS_END)
    block = report_keys_doc(json.loads(schema_file.read_text(encoding="utf-8")))
    doc.write_text(text[:start] + block + text[end:], encoding="utf-8")


if __name__ == "__main__":
    docs = Path(__file__).resolve().parent.parent / "docs"
    for p in write_schemas(docs / "schema"):
        print(f"wrote {p}")
    write_report_keys(docs / "architecture.md", docs / "schema" / "report.schema.json")
    print(f"wrote the report keys of {docs / 'architecture.md'}")
