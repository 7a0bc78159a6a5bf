"""report.md: the teacher / student / artifact table a person reads first."""

from __future__ import annotations

from typing import Any

from edgekd.data.dataset import data_notes
from edgekd.devices.report_rows import markdown_lines as device_lines
from edgekd.schema import REPORT_SCHEMA_VERSION  # noqa: F401 - re-exported for readers


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _kib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KiB"


def _int_or_none(n: int | None) -> str:
    return "no limit on" if n is None else f"{n:,}"


def _budget_words(sel: dict[str, Any]) -> str:
    """'0.08 ms (0.1 ms stated x headroom 0.8)': selection aims below what the shipped student must meet."""
    stated = sel.get("stated_budget_ms")
    if stated is None:
        return f"{sel['budget_ms']:.3g} ms"
    return f"{sel['budget_ms']:.3g} ms ({stated:.3g} ms stated x headroom {sel.get('headroom')})"


def _drift_words(shipped: dict[str, Any]) -> str:
    """From the selection's timing to the shipped artifact's, and whether the stated budget still holds."""
    words = f"drift from selection {_num(shipped.get('drift_pct'), '+.1f')} %"
    verdict = shipped.get("meets_stated_budget")
    if verdict is not None:
        words += f", {'meets' if verdict else 'MISSES'} the stated {shipped['stated_budget_ms']:.3g} ms"
    return words


def _selection_lines(sel: dict[str, Any] | None) -> list[str]:
    """The student search (edgekd.selection): every candidate with its latency, capacity and verdict."""
    if not sel:
        return []
    out = [f"- Selection by {sel['mode']}: {sel['why']}"]
    if sel["mode"] != "latency":
        return out + _accuracy_lines(sel) + _preflight_lines(sel)
    out.append(f"- Latency budget {_budget_words(sel)} at p{sel['percentile']} ({sel['budget_source']}), "
               f"timed as {sel['format']} {sel['precision']} on {sel['measured_on']}; {sel['measured']} measured, "
               f"{sel['reused']} reused from the cache, {sel['predicted_only']} predicted only, "
               f"in {sel['time_s']:.1f} s. Predictor: {sel['predictor']['summary']}.")
    shipped = sel.get("shipped_prediction")
    if shipped:
        out.append(f"- Shipped {shipped['artifact']}: predicted {_num(shipped['predicted_ms'], '.4f')} ms, measured "
                   f"{shipped['measured_ms']:.4f} ms p{sel['percentile']} ({_num(shipped['error_pct'], '+.1f')} %); "
                   f"{_drift_words(shipped)}.")
    out += ["", f"| candidate | params | MACs | p{sel['percentile']} ms | noise % | predicted ms | capacity "
                "| verdict |", "|---|---|---|---|---|---|---|---|"]
    for c in sel["candidates"]:
        lat = c.get("latency_ms") or {}
        out.append(f"| {c['name']} | {c['params']:,} | {c['macs']:,} | {_num(lat.get('value'), '.4f')} "
                   f"| {_num(lat.get('noise_pct'), '.1f')} | {_num(c.get('predicted_ms'), '.4f')} "
                   f"| {_num(c.get('capacity'), '.4g')} | {c['status']}: {c['reason']} |")
    return out + [""] + _accuracy_lines(sel) + _preflight_lines(sel)


def _accuracy_lines(sel: dict[str, Any]) -> list[str]:
    """The accuracy search (--selection auto): which rule chose the student and why, and every finalist."""
    acc = sel.get("accuracy")
    if not acc:
        return []
    cost = (f"{acc['time_s']:.1f} s" + (f" = {acc['pct_of_build']:.1f} % of the build" if acc.get("pct_of_build")
                                        is not None else "")
            + (f", capped at {acc['cap_s']:.1f} s ({100 * acc['share']:.0f} % of the expected "
               f"{acc['expected_build_s']:.0f} s)" if acc.get("cap_s") is not None else ""))
    out = [f"- Chosen by {sel.get('chosen_by') or sel['mode']}: {sel.get('chosen_why') or acc['why']}",
           f"- Accuracy search ({'ran' if acc['ran'] else 'did not run'}: {cost}): {acc['rule']}; "
           f"{acc['val_samples']} validation samples, test split {acc['test_split']}."]
    if not acc["ran"]:
        return out + [f"- Not run: {acc['why']}"]
    out += ["", "| finalist | why a finalist | params | MACs | latency ms | proxy val accuracy (steps) | step ms "
                "| verdict |", "|---|---|---|---|---|---|---|---|"]
    for c in acc["candidates"]:
        scores = ", ".join(f"{s['val_accuracy']:.4f} ({s['steps']})" for s in c["scores"]) or "-"
        out.append(f"| {c['name']} | {c['why']} | {c['params']:,} | {c['macs']:,} | {_num(c.get('latency_ms'), '.4f')} "
                   f"| {scores} | {_num(c.get('step_ms'), '.1f')} | {c['status']} |")
    return out + [""]


def _preflight_lines(sel: dict[str, Any]) -> list[str]:
    lines = []
    for p in sel.get("preflight") or []:
        checked = ", ".join(f"{r['format']} {r['precision']}" for r in p["artifacts"])
        lines.append(f"- Pre-flight {p['name']}: {'passed' if p['passed'] else 'FAILED: ' + p['reason']} "
                     f"({checked or 'nothing checked'}, {p['seconds']:.1f} s)")
    return lines


def comparison_table(report: dict[str, Any]) -> str:
    """Markdown table: teacher, PyTorch student, and every artifact, measured in the same run."""
    t, s = report["teacher"], report["student"]
    head = ("| model | format | precision | params | MACs | size | accuracy | agree w/ teacher | p50 ms | p99 ms "
            "| peak MB | speed vs teacher | shipped |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]  # speed vs teacher: the teacher in the same runtime
    for fmt, tf in (t.get("by_format") or {"onnx": t}).items():
        lines.append(f"| teacher ({t['arch']}) | {fmt} | fp32 | {t['params']:,} | {t['macs']:,} "
                     f"| {_kib(tf['size_bytes'])} | {_pct(t['accuracy'])} | 100.00 % | {_num(tf['latency_ms']['p50'])} "
                     f"| {_num(tf['latency_ms']['p99'])} | {_num(tf['peak_memory_mb'], '.1f')} | 1.00x | reference |")
    lines.append(f"| student ({s['family']}, PyTorch) | - | fp32 | {s['params']:,} | {s['macs']:,} | - "
                 f"| {_pct(s['accuracy'])} | - | - | - | - | - | - |")
    for a in report["artifacts"]:
        lines.append(
            f"| {a['path']} | {a['format']} | {a['precision']} | {a.get('params', s['params']):,} "
            f"| {a.get('macs', s['macs']):,} | {_kib(a['size_bytes'])} | {_pct(a['accuracy'])} "
            f"| {_pct(a['agreement_with_teacher'])} | {_num(a['latency_ms']['p50'])} | {_num(a['latency_ms']['p99'])} "
            f"| {_num(a['peak_memory_mb'], '.1f')} | {_num(a.get('speed_vs_teacher'), '.2f')}x "
            f"| {'**yes**' if a.get('shipped') else 'no'} |"
        )
    paired = next((a["latency_vs_teacher"] for a in report["artifacts"] if a.get("latency_vs_teacher")), None)
    if paired:
        lines.append(f"\nSpeed vs teacher: each artifact timed against the teacher {paired['how']} (the median of "
                     "the pairs' ratios; the p50 columns are each model's own run, minutes apart).")
    return "\n".join(lines)


def _preprocess_lines(report: dict[str, Any]) -> list[str]:
    """Pre-processing the runner did itself from raw samples, per shipped artifact, beside inference."""
    lines = []
    for a in report["artifacts"]:
        pre = a.get("preprocess")
        if a.get("shipped") and pre:
            steps = "resize + crop + normalisation" if pre["applies_to"] == "source" else "normalisation"
            lines.append(f"- Pre-processing on the device ({steps}, {a['path']}): p50 {pre['ms']['p50']:.4f} ms "
                         f"per sample beside inference p50 {a['latency_ms']['p50']:.4f} ms; matches the build's "
                         f"inputs to {pre['max_abs_diff_vs_build']:.2g}.")
    return lines


def _evaluation_words(report: dict[str, Any]) -> str:
    """"Test", or the folder scored instead when the data has no separate test split (train/ + val/)."""
    name = (report.get("data") or {}).get("evaluation_split")
    return f"Evaluation-split ({name}/, no separate test split)" if name else "Test"


def _data_lines(report: dict[str, Any]) -> list[str]:
    """How the data was read and split (layout, seeded splits, the evaluation split, skipped files)."""
    notes = data_notes(report.get("data") or {})
    return ["", "## Data", *[f"- {note}" for note in notes]] if notes else []


def render_markdown(report: dict[str, Any]) -> str:
    m, s, t = report["measured_on"], report["student"], report["teacher"]
    where = "the target device" if m.get("is_target_device") else "a host that is NOT the target device"
    identity = m.get("identity") or {}
    out = [
        f"# edgekd report: {report['target']}",
        "",
        f"Measured on {where}: {m.get('cpu', '?')} ({m.get('arch')}, {m.get('cores')} cores), "
        f"{m.get('threads')} thread(s), batch 1, runner in a fresh process without torch.",
        *([f"Target-device rule: {identity.get('rule')} ({'; '.join(identity.get('reasons', []))})."]
          if identity else []),
        "Peak memory (peak MB) is the model's: peak resident memory while running, over the runtime's own baseline "
        "(imports done, nothing loaded).",
        "",
        comparison_table(report),
        "",
        "## Student",
        f"- {s['family']} {s['config']}: {s['params']:,} params, {s['macs']:,} MACs "
        f"({_num(s.get('macs_ratio_to_teacher'), '.3f')} of the teacher's MACs), chosen as the largest of "
        f"{s['budget_fit']['candidates_fitting']} configurations that fit the budget "
        f"(max {s['budget_fit']['max_params']:,} params, {_int_or_none(s['budget_fit']['max_macs'])} MACs"
        + (f"; rule: {s['budget_fit']['rule']}" if s['budget_fit'].get('rule') else "") + ").",
        *_selection_lines(s.get("selection")),
        f"- Distillation: {s['distillation']['loss_weights']} at T={s['distillation']['temperature']}, "
        f"best validation epoch {s['distillation']['best_epoch']}/{s['distillation']['epochs']}, "
        f"teacher took {100 * s['distillation']['teacher_time_share']:.1f} % of training time.",
        f"- {_evaluation_words(report)} accuracy: teacher {_pct(t['accuracy'])}, KD student {_pct(s['accuracy'])}"
        + (f", same student trained alone {_pct(s['accuracy_trained_alone'])} "
           f"(KD gain {100 * s['kd_gain']:+.2f} points)." if s.get("accuracy_trained_alone") is not None else "."),
        *_preprocess_lines(report),
        *_data_lines(report),
        "",
        "## Stages (measured in this run, target format)",
        "| stage | artifact | accuracy | params | MACs | size | p50 ms |",
        "|---|---|---|---|---|---|---|",
        *[f"| {st['stage']} | {st['artifact']} | {_pct(st['accuracy'])} | {st['params']:,} | {st['macs']:,} "
          f"| {_kib(st['size_bytes'])} | {_num(st['p50_ms'], '.4f')} |" for st in report.get("stages", [])],
        *([f"- Pruning: {report['pruning']['summary']}"] if report.get("pruning") else []),
        *[f"- {a['path']}: layers kept in float for the accuracy contract: "
          f"{', '.join(a['accuracy_aware']['float_layers']) or 'none'}" for a in report["artifacts"]
          if a.get("accuracy_aware")],
        "",
        "## Precision choice",
        *[f"- {fmt}: {why}" for fmt, why in report.get("precision_choice", {}).items()],
        "",
        *device_lines(report),
        "## Gate",
    ]
    gate = report.get("gate", {})
    out.append("PASSED" if gate.get("passed") else "FAILED")
    out += [f"- {v}" for v in gate.get("violations", [])]
    if gate.get("unverified"):
        out.append(f"- unverified here (device budgets): {', '.join(sorted(set(gate['unverified'])))}")
    return "\n".join(out) + "\n"
