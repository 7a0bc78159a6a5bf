"""report.md: the teacher / student / artifact table a person reads first."""

from __future__ import annotations

from typing import Any

from edgekd.data.dataset import data_notes
from edgekd.devices.report_rows import markdown_lines as device_lines
from edgekd.schema import (
    REPORT_SCHEMA_VERSION,  # noqa: F401 - re-exported for readers
    Gate,
    Report,
    Selection,
    ShippedPrediction,
    as_report,
    dump,
)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _kib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KiB"


def _int_or_none(n: int | None) -> str:
    return "no limit on" if n is None else f"{n:,}"


def _budget_words(sel: Selection) -> str:
    """'0.08 ms (0.1 ms stated x headroom 0.8)': selection aims below what the shipped student must meet."""
    if sel.stated_budget_ms is None:
        return f"{sel.budget_ms:.3g} ms"
    return f"{sel.budget_ms:.3g} ms ({sel.stated_budget_ms:.3g} ms stated x headroom {sel.headroom})"


def _drift_words(shipped: ShippedPrediction) -> str:
    """From the selection's timing to the shipped artifact's, and whether the stated budget still holds."""
    words = f"drift from selection {_num(shipped.drift_pct, '+.1f')} %"
    if shipped.meets_stated_budget is not None:
        verdict = "meets" if shipped.meets_stated_budget else "MISSES"
        words += f", {verdict} the stated {_num(shipped.stated_budget_ms, '.3g')} ms"
    return words


def _selection_lines(sel: Selection | None) -> list[str]:
    """The student search (edgekd.selection): every candidate with its latency, capacity and verdict."""
    if sel is None:
        return []
    out = [f"- Selection by {sel.mode}: {sel.why}"]
    if sel.mode != "latency":
        return out + _accuracy_lines(sel) + _preflight_lines(sel)
    out.append(f"- Latency budget {_budget_words(sel)} at p{sel.percentile} ({sel.budget_source}), "
               f"timed as {sel.format} {sel.precision} on {sel.measured_on}; {sel.measured} measured, "
               f"{sel.reused} reused from the cache, {_num(sel.predicted_only, 'd')} predicted only, "
               f"in {sel.time_s:.1f} s. Predictor: {sel.predictor.summary}.")
    shipped = sel.shipped_prediction
    if shipped:
        out.append(f"- Shipped {shipped.artifact}: predicted {_num(shipped.predicted_ms, '.4f')} ms, measured "
                   f"{shipped.measured_ms:.4f} ms p{sel.percentile} ({_num(shipped.error_pct, '+.1f')} %); "
                   f"{_drift_words(shipped)}.")
    out += ["", f"| candidate | params | MACs | p{sel.percentile} ms | noise % | predicted ms | capacity "
                "| verdict |", "|---|---|---|---|---|---|---|---|"]
    for c in sel.candidates:
        lat = c.latency_ms
        out.append(f"| {c.name} | {c.params:,} | {c.macs:,} | {_num(lat and lat.value, '.4f')} "
                   f"| {_num(lat and lat.noise_pct, '.1f')} | {_num(c.predicted_ms, '.4f')} "
                   f"| {_num(c.capacity, '.4g')} | {c.status}: {c.reason} |")
    return out + [""] + _accuracy_lines(sel) + _preflight_lines(sel)


def _accuracy_lines(sel: Selection) -> list[str]:
    """The accuracy search (--selection auto): which rule chose the student and why, and every finalist."""
    acc = sel.accuracy
    if acc is None:
        return []
    cost = (f"{acc.time_s:.1f} s" + (f" = {acc.pct_of_build:.1f} % of the build" if acc.pct_of_build is not None
                                     else "")
            + (f", capped at {acc.cap_s:.1f} s ({100 * acc.share:.0f} % of the expected "
               f"{_num(acc.expected_build_s, '.0f')} s)" if acc.cap_s is not None else ""))
    out = [f"- Chosen by {sel.chosen_by or sel.mode}: {sel.chosen_why or acc.why}",
           f"- Accuracy search ({'ran' if acc.ran else 'did not run'}: {cost}): {acc.rule}; "
           f"{acc.val_samples} validation samples, test split {acc.test_split}."]
    if not acc.ran:
        return out + [f"- Not run: {acc.why}"]
    out += ["", "| finalist | why a finalist | params | MACs | latency ms | proxy val accuracy (steps) | step ms "
                "| verdict |", "|---|---|---|---|---|---|---|---|"]
    for c in acc.candidates:
        scores = ", ".join(f"{s.val_accuracy:.4f} ({s.steps})" for s in c.scores) or "-"
        out.append(f"| {c.name} | {c.why} | {c.params:,} | {c.macs:,} | {_num(c.latency_ms, '.4f')} "
                   f"| {scores} | {_num(c.step_ms, '.1f')} | {c.status} |")
    return out + [""]


def _preflight_lines(sel: Selection) -> list[str]:
    lines = []
    for p in sel.preflight:
        checked = ", ".join(f"{r.get('format')} {r.get('precision')}" for r in p.artifacts)
        lines.append(f"- Pre-flight {p.name}: {'passed' if p.passed else 'FAILED: ' + p.reason} "
                     f"({checked or 'nothing checked'}, {p.seconds:.1f} s)")
    return lines


def comparison_table(report: Report | dict[str, Any]) -> str:
    """Markdown table: teacher, PyTorch student and every artifact, measured in the same run."""
    report = as_report(report)
    t, s = report.teacher, report.student
    head = ("| model | format | precision | params | MACs | size | accuracy | agree w/ teacher | p50 ms | p99 ms "
            "| peak MB | speed vs teacher | shipped |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]  # speed vs teacher: the teacher in the same runtime
    for fmt, tf in (t.by_format or {"onnx": t}).items():
        lines.append(f"| teacher ({t.arch}) | {fmt} | fp32 | {t.params:,} | {t.macs:,} "
                     f"| {_kib(tf.size_bytes)} | {_pct(t.accuracy)} | 100.00 % | {_num(tf.latency_ms.p50)} "
                     f"| {_num(tf.latency_ms.p99)} | {_num(tf.peak_memory_mb, '.1f')} | 1.00x | reference |")
    lines.append(f"| student ({s.family}, PyTorch) | - | fp32 | {s.params:,} | {s.macs:,} | - "
                 f"| {_pct(s.accuracy)} | - | - | - | - | - | - |")
    for a in report.artifacts:
        lines.append(
            f"| {a.path} | {a.format} | {a.precision} | {a.params:,} | {a.macs:,} | {_kib(a.size_bytes)} "
            f"| {_pct(a.accuracy)} | {_pct(a.agreement_with_teacher)} | {_num(a.latency_ms.p50)} "
            f"| {_num(a.latency_ms.p99)} | {_num(a.peak_memory_mb, '.1f')} | {_num(a.speed_vs_teacher, '.2f')}x "
            f"| {'**yes**' if a.shipped else 'no'} |"
        )
    paired = next((a.latency_vs_teacher for a in report.artifacts if a.latency_vs_teacher), None)
    if paired:
        lines.append(f"\nSpeed vs teacher: each artifact timed against the teacher {paired.how} (the median of "
                     "the pairs' ratios; the p50 columns are each model's own run, minutes apart).")
    return "\n".join(lines)


def _preprocess_lines(report: Report) -> list[str]:
    """Pre-processing the runner did itself from raw samples, per shipped artifact, beside inference."""
    lines = []
    for a in report.shipped:
        pre = a.preprocess
        if pre:
            steps = {"source": "resize + crop + normalisation", "text": "tokenizing the raw text with vocab.txt"
                     }.get(pre.applies_to, "normalisation")
            lines.append(f"- Pre-processing on the device ({steps}, {a.path}): p50 {pre.ms.p50:.4f} ms "
                         f"per sample beside inference p50 {a.latency_ms.p50:.4f} ms; matches the build's "
                         f"inputs to {pre.max_abs_diff_vs_build:.2g}.")
        if a.precision_detail:  # int8 that is not all int8 (a text model's embedding lookup)
            lines.append(f"- Precision shipped ({a.path}): {a.precision_detail}.")
    return lines


def _evaluation_words(report: Report) -> str:
    """"Test", or the folder scored instead when the data has no separate test split (train/ + val/)."""
    name = report.data.get("evaluation_split")
    return f"Evaluation-split ({name}/, no separate test split)" if name else "Test"


def _data_lines(report: Report) -> list[str]:
    """How the data was read and split (layout, seeded splits, the evaluation split, skipped files)."""
    notes = data_notes(report.data)
    return ["", "## Data", *[f"- {note}" for note in notes]] if notes else []


def _student_lines(report: Report) -> list[str]:
    s, fit, kd = report.student, report.student.budget_fit, report.student.distillation
    alone = s.accuracy_trained_alone
    return [
        f"- {s.family} {s.config}: {s.params:,} params, {s.macs:,} MACs "
        f"({_num(s.macs_ratio_to_teacher, '.3f')} of the teacher's MACs), chosen as the largest of "
        f"{fit.candidates_fitting} configurations that fit the budget "
        f"(max {fit.max_params:,} params, {_int_or_none(fit.max_macs)} MACs"
        + (f"; rule: {fit.rule}" if fit.rule else "") + ").",
        *_selection_lines(s.selection),
        f"- Distillation: {kd.loss_weights} at T={kd.temperature}, best validation epoch {kd.best_epoch}/{kd.epochs}, "
        f"teacher took {100 * kd.teacher_time_share:.1f} % of training time.",
        f"- {_evaluation_words(report)} accuracy: teacher {_pct(report.teacher.accuracy)}, KD student "
        f"{_pct(s.accuracy)}" + ("." if alone is None else f", same student trained alone {_pct(alone)}"
                                 f" (KD gain {_num(s.kd_gain and 100 * s.kd_gain, '+.2f')} points)."),
    ]


def _gate_lines(gate: Gate | None) -> list[str]:
    if gate is None:
        return ["not evaluated"]
    out = ["PASSED" if gate.passed else "FAILED", *[f"- {v}" for v in gate.violations]]
    if gate.unverified:
        out.append(f"- unverified here (device budgets): {', '.join(sorted(set(gate.unverified)))}")
    return out


def render_markdown(report: Report | dict[str, Any]) -> str:
    """report.md from the validated report (a decoded report.json is validated first: ``schema.as_report``)."""
    report = as_report(report)
    m = report.measured_on
    where = "the target device" if m.is_target_device else "a host that is NOT the target device"
    identity = (m.model_extra or {}).get("identity") or {}
    out = [
        f"# edgekd report: {report.target}",
        "",
        f"Measured on {where}: {m.cpu or '?'} ({m.arch}, {m.cores} cores), "
        f"{m.threads} thread(s), batch 1, runner in a fresh process without torch.",
        *([f"Target-device rule: {identity.get('rule')} ({'; '.join(identity.get('reasons', []))})."]
          if identity else []),
        "Peak memory (peak MB) is the model's: peak resident memory while running, over the runtime's own baseline "
        "(imports done, nothing loaded).",
        "",
        comparison_table(report),
        "",
        "## Student",
        *_student_lines(report),
        *_preprocess_lines(report),
        *_data_lines(report),
        "",
        "## Stages (measured in this run, target format)",
        "| stage | artifact | accuracy | params | MACs | size | p50 ms |",
        "|---|---|---|---|---|---|---|",
        *[f"| {st.stage} | {st.artifact} | {_pct(st.accuracy)} | {st.params:,} | {st.macs:,} "
          f"| {_kib(st.size_bytes)} | {_num(st.p50_ms, '.4f')} |" for st in report.stages],
        *([f"- Pruning: {report.pruning['summary']}"] if report.pruning else []),
        *[f"- {a.path}: layers kept in float for the accuracy contract: "
          f"{', '.join(aa['float_layers']) or 'none'}" for a in report.artifacts
          if (aa := (a.model_extra or {}).get("accuracy_aware"))],
        "",
        "## Precision choice",
        *[f"- {fmt}: {why}" for fmt, why in report.precision_choice.items()],
        "",
        *device_lines(dump(report)),
        "## Gate",
        *_gate_lines(report.gate),
    ]
    return "\n".join(out) + "\n"
