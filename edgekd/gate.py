"""The CI gate: every budget of the target checked against a report, one row each.

Device budgets (latency, peak memory) are verified only by numbers measured on a matching device; measured
elsewhere they are "unverified" (a failure only with ``strict``). Hardware-independent budgets (params, MACs,
size, accuracy, latency relative to the teacher in the same run) always gate.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.targets import TargetProfile

PASS, FAIL, UNVERIFIED = "pass", "fail", "unverified"


@dataclass(frozen=True)
class BudgetCheck:
    name: str
    artifact: str | None
    measured: float | None
    budget: float
    unit: str
    comparison: str  # "<=" or ">="
    status: str
    device_bound: bool
    note: str = ""

    @property
    def margin(self) -> float | None:
        if self.measured is None:
            return None
        return self.budget - self.measured if self.comparison == "<=" else self.measured - self.budget


@dataclass
class GateResult:
    checks: list[BudgetCheck]
    strict: bool

    @property
    def failures(self) -> list[BudgetCheck]:
        return [c for c in self.checks if c.status == FAIL or (self.strict and c.status == UNVERIFIED)]

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "strict": self.strict,
            "violations": [_describe(c) for c in self.failures],
            "unverified": [c.name for c in self.checks if c.status == UNVERIFIED],
            "checks": [{**asdict(c), "margin": c.margin} for c in self.checks],
        }


def _describe(c: BudgetCheck) -> str:
    where = f" [{c.artifact}]" if c.artifact else ""
    if c.status == UNVERIFIED:
        return f"{c.name}{where}: unverified ({c.note})"
    return f"{c.name}{where}: measured {c.measured:.6g} {c.unit}, budget {c.comparison} {c.budget:.6g} {c.unit}"


def _check(name, artifact, measured, budget, unit, comparison, device_bound=False, on_device=True, note=""):
    if measured is None:
        return BudgetCheck(name, artifact, None, budget, unit, comparison, UNVERIFIED, device_bound,
                           note or "not measured in this report")
    ok = measured <= budget if comparison == "<=" else measured >= budget
    status = PASS if ok else FAIL
    if device_bound and not on_device:
        status, note = UNVERIFIED, note or "measured on a host that is not the target device"
    return BudgetCheck(name, artifact, float(measured), float(budget), unit, comparison, status, device_bound, note)


def evaluate_gate(report: dict[str, Any], target: TargetProfile, strict: bool = False) -> GateResult:
    """Check ``report`` against every budget of ``target``."""
    try:
        student, teacher = report["student"], report["teacher"]
        shipped = [a for a in report["artifacts"] if a.get("shipped", True)]
        on_device = bool(report["measured_on"].get("is_target_device", False))
    except (KeyError, TypeError) as exc:
        raise EdgekdError(f"report lacks the field {exc}", "gate a report.json written by `edgekd build`") from None
    sb, b = target.student_budget, target.budgets
    checks = [
        _check("params", None, student.get("params"), sb.max_params, "params", "<="),
        _check("macs", None, student.get("macs"), sb.max_macs, "MACs", "<="),
    ]
    teacher_acc = teacher.get("accuracy")
    teacher_p50 = (teacher.get("latency_ms") or {}).get("p50")
    for a in shipped:
        name = a["path"]
        lat = a.get("latency_ms") or {}
        if b.model_size_kb is not None:
            checks.append(_check("model_size_kb", name, a["size_bytes"] / 1024, b.model_size_kb, "KiB", "<="))
        if b.min_accuracy_ratio is not None and teacher_acc:
            checks.append(_check("min_accuracy_ratio", name, a["accuracy"] / teacher_acc, b.min_accuracy_ratio,
                                 "x teacher", ">="))
        if b.max_quantization_drop is not None:
            drop = None if student.get("accuracy") is None else student["accuracy"] - a["accuracy"]
            checks.append(_check("max_quantization_drop", name, drop, b.max_quantization_drop, "accuracy", "<="))
        reference_p50 = a.get("teacher_p50_ms_same_runtime") or teacher_p50
        if b.max_latency_ratio_to_teacher is not None and reference_p50:
            checks.append(_check("max_latency_ratio_to_teacher", name, lat.get("p50", 0) / reference_p50,
                                 b.max_latency_ratio_to_teacher, "x teacher p50", "<="))
        if b.latency_ms_p95 is not None:
            checks.append(_check("latency_ms_p95", name, lat.get("p95"), b.latency_ms_p95, "ms", "<=",
                                 device_bound=True, on_device=on_device))
        if b.peak_memory_mb is not None:
            checks.append(_check("peak_memory_mb", name, a.get("peak_memory_mb"), b.peak_memory_mb, "MB", "<=",
                                 device_bound=True, on_device=on_device))
    return GateResult(checks, strict)


def load_report(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"report not found: {path}", "pass the report.json that `edgekd build` wrote")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgekdError(f"report {path} is not valid JSON ({exc})", "rebuild it with `edgekd build`") from None
    if not isinstance(report, dict) or "target" not in report:
        raise EdgekdError(f"report {path} is not an edgekd report (no 'target')", "pass an edgekd report.json")
    return report


def format_table(result: GateResult) -> str:
    rows = [("budget", "artifact", "measured", "budget", "margin", "status")]
    for c in result.checks:
        measured = "-" if c.measured is None else f"{c.measured:.6g} {c.unit}"
        margin = "-" if c.margin is None else f"{c.margin:+.6g}"
        status = c.status.upper() if c.status != PASS else "pass"
        if c.status == UNVERIFIED and result.strict:
            status = "FAIL (unverified, --strict)"
        rows.append((c.name, c.artifact or "(student)", measured, f"{c.comparison} {c.budget:.6g}", margin, status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    verdict = "PASSED" if result.passed else f"FAILED ({len(result.failures)} budget(s) violated)"
    return "\n".join(lines) + f"\n\ngate {verdict}"


# --------------------------------------------------------------------------------------------- CLI
def cmd_gate(args) -> int:
    import os

    from edgekd.targets import load_target

    report = load_report(args.report)
    target_spec = args.target or report.get("target_path") or report["target"]
    if not args.target and not os.path.exists(str(target_spec)):
        target_spec = report["target"]
    target = load_target(target_spec)
    if target.name != report["target"]:
        raise EdgekdError(f"report {args.report} is for target '{report['target']}', not '{target.name}'",
                          f"gate it with --target {report['target']}, or rebuild for {target.name}")
    result = evaluate_gate(report, target, strict=args.strict)
    print(format_table(result))
    return 0 if result.passed else 1


def register_cli(sub) -> None:
    p = sub.add_parser("gate", help="check a report against its target's budgets (exit 1 on violation)")
    p.add_argument("report", help="report.json")
    p.add_argument("--target", help="target name or YAML path (default: the report's target)")
    p.add_argument("--strict", action="store_true", help="fail budgets that could not be verified on the device")
    p.set_defaults(func=cmd_gate)
