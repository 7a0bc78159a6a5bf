"""Stage: per format, ship the fastest allowed precision that keeps the accuracy contract.

The contract is checked on the validation split (each artifact's accuracy measured in its real runtime at export),
so the choice never looks at the test split; speed comes from the benchmark. The contract is about what a precision
costs: when the fp32 student itself falls short of ``min_accuracy_ratio`` x the teacher, no precision can meet that
part, so the choice judges the quantization drop alone and the gate fails the ratio (exit 1, artifacts kept) —
a weak student is a result to report, not bad input.

The ratio is checked as ``accuracy >= min_accuracy_ratio x the teacher's``, a product, never a quotient: a teacher
that scores 0 on validation (a broken or untrained teacher file) sets no floor, so every precision meets that part
and the choice rests on the quantization drop and speed. The report keeps the teacher's 0 for a person to see; the
gate (``edgekd/gate.py``) reads the ratio from the report on its own terms.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgekd.errors import ContractError
from edgekd.stages.context import BuildContext
from edgekd.stages.measure import Measured

EPS = 1e-12


@dataclass
class Candidate:
    measured: Measured
    drop: float  # validation accuracy lost against the fp32 model it was quantized from
    val: float  # validation accuracy

    @property
    def p50(self) -> float:
        return float(self.measured.result["latency_ms"]["p50"])

    @property
    def precision(self) -> str:
        return self.measured.built.artifact.precision


def _candidates(ctx: BuildContext, rows: list[Measured], student_val: float, teacher_val: float,
                fmt: str) -> list[Candidate]:
    out = []
    for m in rows:
        a = m.built.artifact
        if a.format != fmt or a.precision not in ctx.target.runtime.precisions:
            continue
        reference = (a.details.get("qat") or {}).get("val_accuracy_fp32_after", student_val)
        val = m.built.val_accuracy or 0.0
        out.append(Candidate(m, reference - val, val))
    return out


def _meets_ratio(value: float, teacher_val: float, ratio: float) -> bool:
    """``value >= ratio x teacher_val`` (multiplied, so a teacher at 0 accuracy is a floor of 0, not a division)."""
    return value >= ratio * teacher_val - EPS


def _ratio_judged(ctx: BuildContext, student_val: float, teacher_val: float) -> bool:
    """Whether min_accuracy_ratio can decide between precisions: only when the fp32 student meets it."""
    ratio = ctx.target.budgets.min_accuracy_ratio
    return ratio is not None and _meets_ratio(student_val, teacher_val, ratio)


def _meets(ctx: BuildContext, c: Candidate, ratio_judged: bool, teacher_val: float) -> bool:
    b = ctx.target.budgets
    return ((b.max_quantization_drop is None or c.drop <= b.max_quantization_drop + EPS)
            and (not ratio_judged or _meets_ratio(c.val, teacher_val, b.min_accuracy_ratio)))


def choose_shipped(ctx: BuildContext, rows: list[Measured], student_val: float,
                   teacher_val: float) -> tuple[set[str], dict[str, str]]:
    """(paths of the shipped artifacts, why each format shipped what it did, in words)."""
    b, shipped, reasons = ctx.target.budgets, set(), {}
    ratio_judged = _ratio_judged(ctx, student_val, teacher_val)
    if b.min_accuracy_ratio is not None and teacher_val <= 0:
        ctx.say("precision choice: the teacher scores 0 on validation, so min_accuracy_ratio sets no floor; "
                "precisions are judged on their quantization drop and speed")
    elif b.min_accuracy_ratio is not None and not ratio_judged:
        ctx.say(f"precision choice: the fp32 student reaches {student_val:.4f} on validation, under "
                f"min_accuracy_ratio {b.min_accuracy_ratio} x the teacher's {teacher_val:.4f}; precisions are judged "
                "on their quantization drop alone and the gate will fail the ratio")
    for fmt in ctx.target.runtime.formats:
        candidates = _candidates(ctx, rows, student_val, teacher_val, fmt)
        meeting = [c for c in candidates if _meets(ctx, c, ratio_judged, teacher_val)]
        if not meeting:
            best = max(candidates, key=lambda c: c.measured.built.val_accuracy or 0.0)
            raise ContractError(
                f"no {fmt} precision in {list(ctx.target.runtime.precisions)} meets the accuracy contract on the "
                f"validation split (max_quantization_drop={b.max_quantization_drop}, min_accuracy_ratio="
                f"{b.min_accuracy_ratio}); the best, {best.measured.built.artifact.path.name}, reached "
                f"{best.measured.built.val_accuracy:.4f} vs the fp32 student's {student_val:.4f}; nothing was shipped",
                "relax the budget in the target file, or allow another precision (e.g. fp16/fp32)")
        chosen = min(meeting, key=lambda c: c.p50)
        shipped.add(chosen.measured.built.artifact.path.name)
        reasons[fmt] = _reason(chosen, meeting, candidates, rows, fmt) + (
            "" if ratio_judged or b.min_accuracy_ratio is None else
            f"; min_accuracy_ratio not judged here: the fp32 student is at {student_val / teacher_val:.3f} x the "
            "teacher (the gate fails it)")
    return shipped, reasons


def _reason(chosen: Candidate, meeting: list[Candidate], candidates: list[Candidate], rows: list[Measured],
            fmt: str) -> str:
    fp32 = next((m for m in rows if m.built.artifact.format == fmt and m.built.artifact.precision == "fp32"), None)
    fp32_p50 = float(fp32.result["latency_ms"]["p50"]) if fp32 else None
    speed = f", {fp32_p50 / chosen.p50:.2f}x the speed of fp32" if fp32_p50 else ""
    others = [f"{c.precision} failed the accuracy contract (validation drop {c.drop:.4f})" for c in candidates
              if c not in meeting]
    slower = [f"{c.precision} was slower (p50 {c.p50:.4f} ms)" for c in meeting if c is not chosen]
    text = (f"{chosen.precision}: fastest precision meeting the accuracy contract on the validation split "
            f"(p50 {chosen.p50:.4f} ms{speed}, validation drop {chosen.drop:.4f})"
            + ("; " + "; ".join(others + slower) if others or slower else ""))
    if fp32_p50 is not None and chosen.precision != "fp32" and fp32_p50 < chosen.p50:
        text += f"; note: {chosen.precision} is {chosen.p50 / fp32_p50:.2f}x SLOWER than fp32 on this host"
    return text
