"""The CI gate: every budget of the target checked against a report, one row each, plus regressions vs a baseline.

Device budgets (latency, peak memory) are verified only by numbers measured on the target device, as
``edgekd.device_identity.match`` decides it (the machine matches the target file's identity, the target is a
generic profile, or the user declared the device), from the build's host or a ``device_results[]`` entry whose
artifact sha256 is the report's. Measured elsewhere they are "unverified" (a failure only with ``strict``), and a
target whose runtime runs on an accelerator (TensorRT, NNAPI) is never verified by the CPU runner.
Hardware-independent budgets (params, MACs, size, accuracy, latency relative to the teacher in the same run)
always gate. Peak memory is the model's peak over the runtime's baseline (``runner.MEMORY_JUDGED``).

Regressions against a baseline compare like with like and say what the measurements can detect
(``edgekd.gate_stats`` has the statistics and why):

* latency p5 (the floor), p50 and p95: with a baseline run (``--baseline-run``, ``edgekd.gate_same_job``) each
  quantile of the candidate over the baseline artifact timed interleaved in this job, over several fresh
  processes; with a stored baseline report, each quantile against the same quantile of the baseline. The row
  holds the minimum detectable regression (MDR). It fails when the change exceeds both the allowed regression and
  the MDR; when the MDR exceeds the allowed regression the row says "unverifiable at this noise" instead of
  passing (``--strict`` fails it); a stored baseline whose runs were not measured in several processes never
  fails (the between-process variance, which the blocks of one run do not show, is unknown);
* accuracy: the exact McNemar test on per-sample predictions of the same eval inputs (counts and p-value in the
  row); reports scored on different inputs are not compared; without predictions, two independent proportions;
* peak memory beyond +-MEMORY_NOISE_MB, size exactly. Latency or memory measured on different hardware is refused.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import device_identity, gate_stats
from edgekd.devices.gate_rules import device_tool_checks
from edgekd.errors import EdgekdError
from edgekd.gate_rows import FAIL, PASS, UNVERIFIED, BudgetCheck, DeviceMeasurement, budget_check
from edgekd.io import atomic_write, dumps, read_json_object, sha256_file
from edgekd.schema import ArtifactRow, DeviceArtifact, Gate, Report, StudentSection, as_report
from edgekd.targets import TargetProfile

DEFAULT_MAX_REGRESSION_PCT = 10.0
DEFAULT_MAX_ACCURACY_DROP = 0.01
# The latency quantiles compared with the same quantile of the baseline: the floor (p5: the fastest the model ran,
# low enough to dodge interference, high enough to be stable), the median and the tail.
LATENCY_METRICS = (("latency_ms_p5", gate_stats.FLOOR_QUANTILE), ("latency_ms_p50", 50.0), ("latency_ms_p95", 95.0))
# Peak RSS of a fresh runner process moves by about this much between identical runs (allocator, page cache).
MEMORY_NOISE_MB = 2.0
# The fields of measured_on that must agree before latency or memory from two runs can be compared.
HARDWARE_KEYS = ("arch", "cpu", "board", "cores", "threads")


# ============================================================================================ results
@dataclass(frozen=True)
class RegressionCheck:
    """One metric of one shipped artifact against the same artifact in the baseline report."""

    metric: str
    artifact: str
    baseline: float | None
    current: float | None
    unit: str
    status: str
    threshold: str  # the allowed change, in words ("+10 %", "-0.01 accuracy")
    noise: str = ""  # the noise the change had to exceed, in words
    note: str = ""
    # latency: the minimum detectable regression of the two runs (%), and the 95 % interval of current/baseline
    mdr_pct: float | None = None
    ratio_interval: tuple[float, float] | None = None
    ratio: float | None = None  # current/baseline as judged (interleaved: the mean over processes, not the pooled)
    # accuracy, paired: exact McNemar one-sided p-value and the counts {b, c, n} (see edgekd.gate_stats)
    p_value: float | None = None
    counts: dict[str, int] | None = None

    @property
    def change_pct(self) -> float | None:
        if self.ratio is not None:
            return 100.0 * (self.ratio - 1.0)
        if self.baseline is None or self.current is None or self.baseline == 0:
            return None
        return 100.0 * (self.current - self.baseline) / abs(self.baseline)


@dataclass
class GateResult:
    checks: list[BudgetCheck]
    strict: bool
    regressions: list[RegressionCheck] = field(default_factory=list)
    baseline: str | None = None

    def _fails(self, status: str) -> bool:
        return status == FAIL or (self.strict and status == UNVERIFIED)

    @property
    def failures(self) -> list[BudgetCheck]:
        return [c for c in self.checks if self._fails(c.status)]

    @property
    def regression_failures(self) -> list[RegressionCheck]:
        return [r for r in self.regressions if self._fails(r.status)]

    @property
    def passed(self) -> bool:
        return not self.failures and not self.regression_failures

    def to_model(self) -> Gate:
        """report.json's ``gate``, as the schema declares it."""
        return Gate.model_validate_json(dumps(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "passed": self.passed,
            "strict": self.strict,
            "violations": [_describe(c) for c in self.failures] + [_describe_regression(r)
                                                                     for r in self.regression_failures],
            "unverified": [c.name for c in self.checks if c.status == UNVERIFIED],
            "checks": [{**asdict(c), "margin": c.margin} for c in self.checks],
        }
        if self.baseline is not None:
            out["baseline"] = self.baseline
            out["regressions"] = [{**asdict(r), "change_pct": r.change_pct} for r in self.regressions]
        return out


def _describe(c: BudgetCheck) -> str:
    where = f" [{c.artifact}]" if c.artifact else ""
    if c.status == UNVERIFIED:
        return f"{c.name}{where}: unverified ({c.note})"
    how = f" ({c.note})" if c.note else ""
    return f"{c.name}{where}: measured {c.measured:.6g} {c.unit}, budget {c.comparison} {c.budget:.6g} {c.unit}{how}"


def _describe_regression(r: RegressionCheck) -> str:
    if r.status == UNVERIFIED:
        return f"regression {r.metric} [{r.artifact}]: unverified ({r.note})"
    return (f"regression {r.metric} [{r.artifact}]: {_fmt(r.baseline)} -> {_fmt(r.current)} {r.unit} "
            f"({_pct(r.change_pct)}; allowed {r.threshold}, noise {r.noise})")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f} %"


# ============================================================================================ report checks
def check_report(report: Any, label: str, expected_target: str | None = None) -> Report:
    """The ``schema.Report`` this gate judges, refused with exactly why when it cannot be judged correctly: a valid
    report (version, finite numbers, a shipped artifact with an accuracy...) for the expected target."""
    if isinstance(report, dict) and "target" not in report:
        raise EdgekdError(f"{label} is not an edgekd report (no 'target' field)", "pass a report.json from edgekd")
    if not isinstance(report, (dict, Report)):
        raise EdgekdError(f"{label} is not an edgekd report (not a JSON object)", "pass a report.json from edgekd")
    model = as_report(report, label)
    if expected_target is not None and model.target != expected_target:
        raise EdgekdError(f"{label} is for target '{model.target}', not '{expected_target}'",
                          f"gate it with --target {model.target}, or use a report built for {expected_target}")
    return model


# ============================================================================================ budgets
def _accuracy_ratio_check(name: str, accuracy: float | None, teacher_acc: float | None,
                          budget: float) -> BudgetCheck:
    """accuracy / teacher's >= budget. A teacher that scored 0 sets no floor (any accuracy is >= budget x 0): the row
    passes and says why, instead of dividing by zero or claiming the teacher's accuracy is missing."""
    if teacher_acc == 0 and accuracy is not None:
        return BudgetCheck("min_accuracy_ratio", name, None, float(budget), "x teacher", ">=", PASS, False,
                           "the teacher scored 0 on the test split: the ratio sets no accuracy floor")
    ratio = accuracy / teacher_acc if teacher_acc and accuracy is not None else None
    return budget_check("min_accuracy_ratio", name, ratio, budget, "x teacher", ">=",
                        note="" if teacher_acc is not None else "the report has no teacher accuracy")


def _same_artifact(row: DeviceArtifact, artifact: ArtifactRow) -> str | None:
    """Why a device row may not stand for ``artifact`` (sha256 differs or was not verified), or None."""
    if not row.sha256:
        return "no sha256 to compare"
    if row.sha256 != artifact.sha256:
        return f"sha256 {row.sha256[:12]}... is not the report's {artifact.sha256[:12]}..."
    if row.sha256_verified is False:
        return "the runner did not verify the file's sha256"
    return None


def _device_measurement(report: Report, artifact: ArtifactRow, target: TargetProfile) -> DeviceMeasurement:
    """The newest ``device_results[]`` entry on the target with this very artifact wins; else the build's host."""
    refused = []
    for entry in reversed(report.device_results):
        row = next((r for r in entry.artifacts if r.path == artifact.path), None)
        if row is None:
            continue
        identity = device_identity.from_measured_on(target, entry.measured_on.model_dump(mode="json"))
        if not identity.is_target:
            refused.append(f"{entry.remote} is {identity.summary()}")
            continue
        problem = _same_artifact(row, artifact)
        if problem:
            refused.append(f"{entry.remote} ignored: {problem}")
            continue
        return DeviceMeasurement(row, True, f"{entry.remote} is {identity.summary()}")
    host = device_identity.from_measured_on(target, report.measured_on.model_dump(mode="json"))
    return DeviceMeasurement(artifact, host.is_target, "; ".join([f"build host is {host.summary()}", *refused]))


def evaluate_gate(report: Report | dict[str, Any], target: TargetProfile, strict: bool = False,
                  baseline: Report | dict[str, Any] | None = None,
                  max_regression_pct: float = DEFAULT_MAX_REGRESSION_PCT,
                  max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP, baseline_label: str = "baseline",
                  labels: np.ndarray | None = None, same_job: dict[str, dict[str, Any]] | None = None) -> GateResult:
    """Check ``report`` against every budget of ``target``, and against ``baseline`` when one is given (a decoded
    report.json is validated into the model first).

    ``labels``: the eval inputs' labels (``eval_labels``), for the paired accuracy test against the baseline.
    ``same_job``: the baseline's artifacts timed against this report's in this job (``compare_to_baseline``).
    """
    report = check_report(report, "report")
    checks = _student_checks(report.student, target) + [c for a in report.shipped
                                                         for c in _artifact_checks(report, a, target)]
    regressions: list[RegressionCheck] = []
    if baseline is not None:
        regressions = compare_to_baseline(report, baseline, max_regression_pct, max_accuracy_drop, labels, same_job)
    return GateResult(checks, strict, regressions, baseline_label if baseline is not None else None)


def _student_checks(student: StudentSection, target: TargetProfile) -> list[BudgetCheck]:
    sb = target.student_budget
    checks = [budget_check("params", None, student.params, sb.max_params, "params", "<=")]
    if sb.max_macs is not None:  # a latency-budgeted target may set no MAC limit
        checks.append(budget_check("macs", None, student.macs, sb.max_macs, "MACs", "<="))
    return checks


def _artifact_checks(report: Report, a: ArtifactRow, target: TargetProfile) -> list[BudgetCheck]:
    """Every budget of one shipped artifact: hardware-independent ones, then the device's (on the device only)."""
    b, name, checks = target.budgets, a.path, []
    if b.model_size_kb is not None:
        checks.append(budget_check("model_size_kb", name, a.size_bytes / 1024, b.model_size_kb, "KiB", "<="))
    if b.min_accuracy_ratio is not None:
        checks.append(_accuracy_ratio_check(name, a.accuracy, report.teacher.accuracy, b.min_accuracy_ratio))
    if b.max_quantization_drop is not None:
        # Against the fp32 model the artifact was quantized from: the student, or a QAT model (its own).
        reference = report.student.accuracy if a.reference_accuracy is None else a.reference_accuracy
        drop = None if a.accuracy is None else reference - a.accuracy
        checks.append(budget_check("max_quantization_drop", name, drop, b.max_quantization_drop, "accuracy", "<="))
    if b.max_latency_ratio_to_teacher is not None:
        ratio, note = latency_ratio_to_teacher(a, report.teacher.latency_ms.p50)
        checks.append(budget_check("max_latency_ratio_to_teacher", name, ratio, b.max_latency_ratio_to_teacher,
                                   "x teacher p50", "<=", note=note))
    device = _device_measurement(report, a, target)
    if b.latency_ms_p95 is not None:
        checks.append(budget_check("latency_ms_p95", name, device.row.latency_ms.p95, b.latency_ms_p95, "ms", "<=",
                                   True, device.on_device, device.where))
    if b.peak_memory_mb is not None:
        checks.append(budget_check("peak_memory_mb", name, device.row.peak_memory_mb, b.peak_memory_mb, "MB", "<=",
                                   True, device.on_device, device.where))
    return checks + device_tool_checks(device, target, name)


# ============================================================================================ latency
def latency_ratio_to_teacher(a: ArtifactRow, teacher_p50: float | None) -> tuple[float | None, str]:
    """Student / teacher latency and where it comes from: the interleaved timing of the two in one process when the
    report has one; else (reports of older runners) the two separate runs' p50, which the note says."""
    paired = a.latency_vs_teacher
    if paired:
        low, high = paired.ratio_interval_95
        return paired.ratio, (f"interleaved with {paired.teacher_artifact} in one process, "
                              f"{paired.pairs} pairs, 95 % interval {low:.3g}-{high:.3g}")
    reference_p50 = a.teacher_p50_ms_same_runtime or teacher_p50
    if not reference_p50:
        return None, "no teacher latency"
    return a.latency_ms.p50 / reference_p50, "p50 of two separate runs (no interleaved timing in this report)"


def latency_samples(row: ArtifactRow) -> tuple[np.ndarray, int] | None:
    """The timed batch-1 samples of an artifact row and the number of blocks they were taken in, if recorded."""
    detail = row.latency_ms_detail
    if detail is None or not detail.samples_ms:
        return None
    blocks = int(detail.blocks or len(detail.block_medians) or 1)
    return np.asarray(detail.samples_ms, dtype=np.float64), max(1, min(blocks, len(detail.samples_ms)))


def process_quantiles(row: ArtifactRow, quantile: float) -> list[float] | None:
    """One quantile in each process the runner measured the row in (``--processes``), if it used several."""
    processes = [] if row.latency_ms_detail is None else row.latency_ms_detail.processes
    values = [getattr(p, f"p{quantile:g}", None) for p in processes]
    return [float(v) for v in values] if len(values) >= 2 and all(v for v in values) else None


# ============================================================================================ baseline
def hardware_differences(report: Report, baseline: Report) -> list[str]:
    """The measured_on fields that differ: latency and memory from such runs measure the machines, not the model."""
    now, then = report.measured_on.model_dump(mode="json"), baseline.measured_on.model_dump(mode="json")
    return [f"{k} {then.get(k)!r} (baseline) vs {now.get(k)!r} (report)" for k in HARDWARE_KEYS
            if now.get(k) != then.get(k)]


def artifact_key(a: ArtifactRow) -> tuple[str, str, str]:
    return (a.path, a.format, a.precision)


def compare_to_baseline(report: Report | dict[str, Any], baseline: Report | dict[str, Any],
                        max_regression_pct: float = DEFAULT_MAX_REGRESSION_PCT,
                        max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
                        labels: np.ndarray | None = None,
                        same_job: dict[str, dict[str, Any]] | None = None) -> list[RegressionCheck]:
    """Per shipped artifact and metric: like with like, failing only a change beyond the allowance and the noise.

    ``same_job``: per artifact path, the runner's ``versus`` record of it timed against the baseline's artifact in
    this job (``edgekd.gate_same_job``); its latency rows then come from that, not from the stored numbers."""
    if max_regression_pct < 0 or max_accuracy_drop < 0:
        raise EdgekdError("--max-regression and --max-accuracy-drop must be >= 0", "e.g. --max-regression 10")
    report, baseline = check_report(report, "report"), check_report(baseline, "baseline")
    by_key = {artifact_key(a): a for a in baseline.artifacts}
    hw = hardware_differences(report, baseline)
    pairing = eval_pairing(report, baseline, labels)
    rows: list[RegressionCheck] = []
    for a in report.shipped:
        name = a.path
        old = by_key.get(artifact_key(a))
        if old is None:
            rows.append(RegressionCheck("artifact", name, None, None, "", UNVERIFIED, "-",
                                        note=f"the baseline has no {a.format} {a.precision} artifact '{name}'"))
            continue
        if same_job is not None and name in same_job:
            rows += interleaved_regressions(name, same_job[name], max_regression_pct)
        else:
            rows += latency_regressions(name, a, old, max_regression_pct, hw)
        rows.append(_memory_regression(name, a, old, max_regression_pct, hw))
        rows.append(_size_regression(name, a, old, max_regression_pct))
        rows.append(accuracy_regression(name, a, old, max_accuracy_drop, pairing))
    return rows


def latency_regressions(name: str, a: ArtifactRow, old: ArtifactRow, max_pct: float, hw: list[str]
                        ) -> list[RegressionCheck]:
    """One row per quantile (p5, p50, p95), each against the same quantile of the baseline, with the MDR."""
    allowed = f"+{max_pct:g} %"

    def refused(why: str) -> list[RegressionCheck]:
        return [RegressionCheck(m, name, getattr(old.latency_ms, f"p{q:g}", None),
                                getattr(a.latency_ms, f"p{q:g}", None), "ms", UNVERIFIED, allowed, note=why)
                for m, q in LATENCY_METRICS]

    if hw:
        return refused("baseline measured on different hardware: " + "; ".join(hw) +
                       "; refresh the baseline on this runner (--update-baseline)")
    old_s, new_s = latency_samples(old), latency_samples(a)
    if old_s is None or new_s is None:
        side = "baseline" if old_s is None else "report"
        return refused(f"the {side} has no latency samples (latency_ms_detail.samples_ms) to measure noise with; "
                       "rebuild it with this edgekd")
    if min(old_s[1], new_s[1]) < gate_stats.MIN_BLOCKS:
        return refused(f"the latency was timed in fewer than {gate_stats.MIN_BLOCKS} blocks, so its noise cannot be "
                       "estimated; measure with the runner's default --blocks")
    rows = []
    for metric, q in LATENCY_METRICS:
        cmp = gate_stats.compare_quantile(old_s[0], old_s[1], new_s[0], new_s[1], q,
                                          (process_quantiles(old, q), process_quantiles(a, q)))
        verdict = cmp.verdict(max_pct)
        single_process = verdict == "fail" and not cmp.between_processes
        if single_process:
            verdict = "unverifiable"
        lo, hi = cmp.ratio_interval
        noise = (f"current/baseline {cmp.ratio:.3f} (95 % {lo:.3f}-{hi:.3f}); spread "
                 f"{cmp.spread_pct[0]:.1f} % / {cmp.spread_pct[1]:.1f} % "
                 f"({'blocks and processes' if cmp.between_processes else 'blocks of one process'}); interrupted "
                 f"samples {100 * cmp.interrupted[0]:.1f} % / {100 * cmp.interrupted[1]:.1f} %")
        note = _stored_note(cmp, verdict, max_pct, single_process)
        rows.append(_latency_row(metric, name, cmp, verdict, max_pct, noise, note))
    return rows


def _stored_note(cmp: gate_stats.QuantileComparison, verdict: str, max_pct: float, single_process: bool) -> str:
    """What a stored-baseline row could not judge, when the reason is more than the MDR."""
    if cmp.among_interruptions or verdict != "unverifiable":
        return _latency_note(cmp, verdict, max_pct)
    if single_process:
        return (f"unverifiable at this noise: {cmp.change_pct:+.1f} % is beyond the MDR {cmp.mdr_pct:.1f} % of the "
                "blocks, but a run was timed in one process and two processes differ by more than its blocks; gate "
                "against the baseline run in this job (--baseline-run), or measure both runs with the runner's "
                "--processes")
    if cmp.mdr_pct <= max_pct:
        return (f"unverifiable at this noise: {cmp.change_pct:+.1f} % overall but not in every timing block "
                f"(blocks {cmp.block_range[0][0]:.4g}-{cmp.block_range[0][1]:.4g} ms before, "
                f"{cmp.block_range[1][0]:.4g}-{cmp.block_range[1][1]:.4g} ms now): the machine changed speed")
    return _latency_note(cmp, verdict, max_pct)


def _latency_note(cmp: gate_stats.LatencyRatio, verdict: str, max_pct: float) -> str:
    if cmp.among_interruptions:
        return (f"unverifiable at this noise: p{cmp.quantile:g} lies among the interrupted samples (over "
                f"{gate_stats.INTERRUPTED_FACTOR:g}x the p10) of a run; it measures the machine")
    return {"fail": f"slower by more than the allowed {max_pct:g} % and the MDR {cmp.mdr_pct:.1f} %",
            "unverifiable": f"unverifiable at this noise (MDR {cmp.mdr_pct:.1f} %)", "pass": ""}[verdict]


def _latency_row(metric: str, name: str, cmp: gate_stats.LatencyRatio, verdict: str, max_pct: float, noise: str,
                 note: str) -> RegressionCheck:
    status = {"fail": FAIL, "unverifiable": UNVERIFIED, "pass": PASS}[verdict]
    return RegressionCheck(metric, name, cmp.baseline, cmp.current, "ms", status, f"+{max_pct:g} %", noise, note,
                           mdr_pct=cmp.mdr_pct, ratio_interval=cmp.ratio_interval, ratio=cmp.ratio)


def interleaved_regressions(name: str, versus: dict[str, Any], max_pct: float) -> list[RegressionCheck]:
    """One row per quantile from the candidate timed against the baseline artifact in this job (same machine)."""
    allowed = f"+{max_pct:g} %"
    processes = [(np.asarray(p["versus_samples_ms"], dtype=np.float64), np.asarray(p["samples_ms"], dtype=np.float64))
                 for p in versus.get("processes") or [] if p.get("samples_ms") and p.get("versus_samples_ms")]
    if len(processes) < gate_stats.MIN_PROCESSES:
        return [RegressionCheck(m, name, None, None, "ms", UNVERIFIED, allowed,
                                note=f"timed against the baseline in {len(processes)} process(es); the interval "
                                     f"needs at least {gate_stats.MIN_PROCESSES} (--processes)")
                for m, _ in LATENCY_METRICS]
    rows = []
    for metric, q in LATENCY_METRICS:
        cmp = gate_stats.compare_interleaved(processes, q)
        verdict = cmp.verdict(max_pct)
        lo, hi = cmp.ratio_interval
        noise = (f"interleaved with the baseline's {versus['artifact']} in {len(processes)} fresh processes; "
                 f"current/baseline {cmp.ratio:.3f} (95 % {lo:.3f}-{hi:.3f}; per process "
                 f"{min(cmp.process_ratios):.3f}-{max(cmp.process_ratios):.3f}); interrupted samples "
                 f"{100 * cmp.interrupted[0]:.1f} % / {100 * cmp.interrupted[1]:.1f} %")
        rows.append(_latency_row(metric, name, cmp, verdict, max_pct, noise, _latency_note(cmp, verdict, max_pct)))
    return rows


def _memory_regression(name: str, a: ArtifactRow, old: ArtifactRow, max_pct: float, hw: list[str]
                       ) -> RegressionCheck:
    before, after = old.peak_memory_mb, a.peak_memory_mb
    allowed = f"+{max_pct:g} %"
    judged_before, judged_after = (((r.model_extra or {}).get("memory") or {}).get("judged") for r in (old, a))
    if hw:
        return RegressionCheck("peak_memory_mb", name, before, after, "MB", UNVERIFIED, allowed,
                               note="baseline measured on different hardware: " + "; ".join(hw))
    if before is None or after is None:
        return RegressionCheck("peak_memory_mb", name, before, after, "MB", UNVERIFIED, allowed,
                               note="peak memory not measured in both reports")
    if judged_before != judged_after:
        return RegressionCheck("peak_memory_mb", name, before, after, "MB", UNVERIFIED, allowed,
                               note=f"peak memory measured differently (baseline: {judged_before or 'whole process'}; "
                                    f"report: {judged_after or 'whole process'}); refresh the baseline")
    regressed = after > before * (1 + max_pct / 100) and after - before > MEMORY_NOISE_MB
    return RegressionCheck("peak_memory_mb", name, before, after, "MB", FAIL if regressed else PASS, allowed,
                           f"+-{MEMORY_NOISE_MB:g} MB between identical runs")


def _size_regression(name: str, a: ArtifactRow, old: ArtifactRow, max_pct: float) -> RegressionCheck:
    before, after = float(old.size_bytes) / 1024, float(a.size_bytes) / 1024
    regressed = after > before * (1 + max_pct / 100)
    return RegressionCheck("model_size_kb", name, before, after, "KiB", FAIL if regressed else PASS,
                           f"+{max_pct:g} %", "none (deterministic)")


# ============================================================================================ accuracy
@dataclass(frozen=True)
class EvalPairing:
    """Whether two reports' accuracies can be compared sample by sample: ``labels`` when they can."""

    labels: np.ndarray | None
    comparable: bool  # False: scored on different inputs, no comparison at all
    why: str
    samples: int | None = None  # the test size, for the unpaired fallback


def eval_pairing(report: Report, baseline: Report, labels: np.ndarray | None) -> EvalPairing:
    """Paired when both reports scored the same eval inputs (sha256: the schema requires it) and their labels are
    at hand."""
    now, then = report.eval_inputs, baseline.eval_inputs
    samples = now.samples or (report.data.get("splits") or {}).get("test")
    if now.sha256 != then.sha256:
        return EvalPairing(None, False, f"scored on different eval inputs (sha256 {then.sha256[:12]}... in the "
                                        f"baseline, {now.sha256[:12]}... now): accuracies are not comparable")
    if labels is None:
        return EvalPairing(None, True, "unpaired: the eval inputs' labels were not found beside the report", samples)
    return EvalPairing(np.asarray(labels), True, "", samples)


def accuracy_regression(name: str, a: ArtifactRow, old: ArtifactRow, max_drop: float, pairing: EvalPairing
                        ) -> RegressionCheck:
    """Exact McNemar on the same inputs when possible; two independent proportions otherwise (said in the note)."""
    before, after = old.accuracy, a.accuracy
    allowed = f"-{max_drop:g} accuracy"
    if before is None or after is None or not pairing.comparable:
        why = pairing.why if not pairing.comparable else "accuracy not measured in both reports"
        return RegressionCheck("accuracy", name, before, after, "", UNVERIFIED, allowed, note=why)
    pred_old, pred_new = old.predictions, a.predictions
    n = len(pairing.labels) if pairing.labels is not None else 0
    if pairing.labels is not None and pred_old is not None and pred_new is not None \
            and len(pred_old) == len(pred_new) == n:
        return _paired_accuracy(name, old, a, max_drop, pairing.labels)
    why = pairing.why or f"unpaired: {'the baseline' if pred_old is None else 'the report'} has no per-sample " \
                         "predictions for this artifact (or not one per eval sample)"
    return _unpaired_accuracy(name, before, after, max_drop, why, pairing.samples)


def _accuracy_status(drop: float, max_drop: float, significant: bool) -> tuple[str, str]:
    if drop <= max_drop:
        return PASS, ""
    if significant:
        return FAIL, f"accuracy dropped by {drop:.4f}, more than the allowed {max_drop:g}, beyond chance"
    return UNVERIFIED, (f"unverifiable at this test size: a drop of {drop:.4f} exceeds the allowed {max_drop:g} "
                        "but could be chance")


def _paired_accuracy(name: str, old: ArtifactRow, a: ArtifactRow, max_drop: float, labels: np.ndarray
                     ) -> RegressionCheck:
    test = gate_stats.mcnemar_exact(labels, np.asarray(old.predictions), np.asarray(a.predictions))
    status, note = _accuracy_status(test.drop, max_drop, test.p_value < gate_stats.ALPHA_ONE_SIDED)
    noise = (f"paired, exact McNemar p={test.p_value:.4g} (b={test.b} right before and wrong now, c={test.c} the "
             f"reverse, n={test.n})")
    return RegressionCheck("accuracy", name, test.baseline_accuracy, test.current_accuracy, "", status,
                           f"-{max_drop:g} accuracy", noise, note, p_value=test.p_value,
                           counts={"b": test.b, "c": test.c, "n": test.n})


def _unpaired_accuracy(name: str, before: float, after: float, max_drop: float, why: str,
                       samples: int | None) -> RegressionCheck:
    allowed = f"-{max_drop:g} accuracy"
    if not samples:
        return RegressionCheck("accuracy", name, before, after, "", UNVERIFIED, allowed,
                               note=why + "; and the test size is unknown")
    noise = gate_stats.unpaired_drop_noise(before, after, samples)
    status, note = _accuracy_status(before - after, max_drop, before - after > noise)
    return RegressionCheck("accuracy", name, before, after, "", status, allowed,
                           f"+-{noise:.4f} (95 %, two independent proportions, n={samples})",
                           "; ".join(t for t in (note, why) if t))


# ============================================================================================ output
def _status_text(status: str, strict: bool) -> str:
    if status == UNVERIFIED and strict:
        return "FAIL (unverified, --strict)"
    return status.upper() if status != PASS else "pass"


def _budget_rows(result: GateResult) -> list[tuple[str, ...]]:
    rows = []
    for c in result.checks:
        measured = "-" if c.measured is None else f"{c.measured:.6g} {c.unit}"
        margin = "-" if c.margin is None else f"{c.margin:+.6g}"
        rows.append((c.name, c.artifact or "(student)", measured, f"{c.comparison} {c.budget:.6g}", margin,
                     _status_text(c.status, result.strict)))
    return rows


def _regression_rows(result: GateResult) -> list[tuple[str, ...]]:
    return [(r.metric, r.artifact, _fmt(r.baseline), _fmt(r.current), _pct(r.change_pct), r.threshold,
             "-" if r.mdr_pct is None else f"{r.mdr_pct:.1f} %", _status_text(r.status, result.strict),
             "; ".join(t for t in (r.note, r.noise) if t))
            for r in result.regressions]


REGRESSION_HEAD = ("metric", "artifact", "baseline", "current", "change", "allowed", "MDR", "status", "noise / note")


def _plain_table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    rows = [head, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _verdict(result: GateResult) -> str:
    if result.passed:
        return "PASSED"
    parts = []
    if result.failures:
        parts.append(f"{len(result.failures)} budget(s) violated")
    if result.regression_failures:
        parts.append(f"{len(result.regression_failures)} regression(s) vs baseline")
    return f"FAILED ({', '.join(parts)})"


def format_table(result: GateResult) -> str:
    """The rows a person reads in the CI log: budgets, then regressions against the baseline when given."""
    out = _plain_table(("budget", "artifact", "measured", "budget", "margin", "status"), _budget_rows(result))
    if result.baseline is not None:
        out += f"\n\nregressions vs {result.baseline} (MDR: the smallest regression these two runs can tell " \
               "from noise)\n" + _plain_table(REGRESSION_HEAD, _regression_rows(result))
    return out + f"\n\ngate {_verdict(result)}"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def format_markdown(result: GateResult, target: str) -> str:
    """The Markdown summary for a pull request page ($GITHUB_STEP_SUMMARY)."""
    icon = "✅" if result.passed else "❌"
    lines = [f"### {icon} edgekd gate `{target}`: {_verdict(result)}", "",
             "| budget | artifact | measured | budget | margin | status |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in _budget_rows(result)]
    unverified = [c for c in result.checks if c.status == UNVERIFIED]
    if unverified and not result.strict:
        lines += ["", f"{len(unverified)} device budget(s) unverified: {unverified[0].note}. "
                      "Measure on the device (`edgekd bench --remote`) or gate with `--strict` to require it."]
    if result.baseline is not None:
        lines += ["", f"**Regressions vs `{result.baseline}`** (MDR: the smallest regression these two runs can "
                      "tell from noise)", "", "| " + " | ".join(REGRESSION_HEAD) + " |",
                  "|" + "---|" * len(REGRESSION_HEAD)]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in _regression_rows(result)]
    return "\n".join(lines) + "\n"


def format_junit(result: GateResult, target: str) -> str:
    """JUnit XML: one test case per budget check and per regression check; unverified ones are skipped."""
    suite = ET.Element("testsuite", name=f"edgekd.gate.{target}")
    counts = {"tests": 0, "failures": 0, "skipped": 0}

    def case(classname: str, name: str, status: str, message: str, detail: str) -> None:
        tc = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
        counts["tests"] += 1
        if result._fails(status):
            ET.SubElement(tc, "failure", message=message, type=status).text = detail
            counts["failures"] += 1
        elif status == UNVERIFIED:
            ET.SubElement(tc, "skipped", message=message)
            counts["skipped"] += 1
        else:
            ET.SubElement(tc, "system-out").text = detail

    for c in result.checks:
        name = f"{c.name}[{c.artifact or 'student'}]"
        case(f"edgekd.gate.{target}.budgets", name, c.status, _describe(c), _describe(c))
    for r in result.regressions:
        name = f"{r.metric}[{r.artifact}]"
        detail = _describe_regression(r) + (f"; {r.note}" if r.note and r.status != UNVERIFIED else "")
        case(f"edgekd.gate.{target}.regressions", name, r.status, _describe_regression(r), detail)
    for k, v in counts.items():
        suite.set(k, str(v))
    suite.set("errors", "0")
    root = ET.Element("testsuites", name="edgekd gate", **{k: str(v) for k, v in counts.items()})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# ============================================================================================ files
def load_report(path: str | Path, label: str = "report") -> dict[str, Any]:
    """Read a report.json; every way it can be unusable is one EdgekdError naming the file."""
    report = read_json_object(path, label, "pass the report.json that `edgekd build` wrote")
    if "target" not in report:
        raise EdgekdError(f"{label} {path} is not an edgekd report (no 'target')", "pass an edgekd report.json")
    return report


def eval_labels(report_path: str | Path, report: Report | dict[str, Any]) -> np.ndarray | None:
    """Labels ``y`` of the report's eval inputs (``eval_inputs.path`` beside it: a plain name, the schema checks),
    only if the file's sha256 is the one the report records: the paired accuracy test must see the very inputs the
    predictions were made on."""
    info = check_report(report, "report").eval_inputs
    path = Path(report_path).parent / info.path
    if not path.is_file() or sha256_file(path) != info.sha256:
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return np.asarray(npz["y"]) if "y" in npz.files else None
    except (OSError, ValueError):
        return None


def update_baseline(report_path: str | Path, baseline_path: str | Path) -> Path:
    """Accept a report as the new baseline on purpose: an atomic copy, so a cancelled CI job never leaves half."""
    return atomic_write(baseline_path, lambda tmp: shutil.copyfile(report_path, tmp))
