"""Writes docs/measurements.md from benchmarks/results/*.json, so a quoted number cannot drift from its JSON.

``python docs/measurements.py`` regenerates the page; ``--check`` exits 1 when the committed page differs (the test
suite runs the same comparison). One renderer per results file where a file has headline rows worth a table of
their own (``RENDERERS``); every other file gets the generic view: its scalar fields and its first list of rows.
The page states, per file, whether it carries a ``provenance`` block (commit, command, CPU flags, load) or predates
it, so a reader knows which figures can be re-derived as they stand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "measurements.md"

Rows = list[list[str]]
Renderer = Callable[[dict[str, Any]], list[str]]


# ------------------------------------------------------------------------------------------------ formatting
def fmt(value: Any) -> str:
    """A cell: 4 significant digits (whole numbers from 1000), lists joined, None as a dash, pipes escaped."""
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(fmt(v) for v in value)
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(head: Iterable[str], rows: Rows) -> list[str]:
    head = list(head)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def dig(data: Any, *path: str | int, default: Any = None) -> Any:
    """``data[path[0]][path[1]]...`` or ``default`` where any step is missing."""
    for step in path:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return default
    return data


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


# ------------------------------------------------------------------------------------------------ provenance line
def measured_on(data: dict[str, Any]) -> str:
    """Where and when: the provenance block where the file has one, else whatever CPU field it kept."""
    prov = data.get("provenance")
    if isinstance(prov, dict):
        parts = [f"commit {fmt(prov.get('commit'))}" + (" (dirty)" if prov.get("dirty") else ""),
                 f"CPU {fmt(prov.get('cpu'))}, {fmt(prov.get('cores'))} cores"]
        if prov.get("cpu_flags"):
            parts.append(f"flags {' '.join(prov['cpu_flags'])}")
        if prov.get("loadavg_before"):
            peak = f", at most {fmt(prov['loadavg_max_1min'])}" if prov.get("loadavg_max_1min") is not None else ""
            parts.append(f"load {fmt(prov['loadavg_before'][0])} -> {fmt((prov.get('loadavg_after') or [None])[0])}"
                         + peak + (" (busy: no verdict)" if prov.get("host_busy") else ""))
        if prov.get("wall_s") is not None:
            parts.append(f"wall {fmt(prov['wall_s'])} s")
        return "provenance: " + "; ".join(parts)
    cpu = data.get("cpu") or dig(data, "measured_on", "cpu") or dig(data, "machine", "cpu")
    where = f" (CPU recorded as {fmt(cpu)})" if cpu else " (no CPU recorded)"
    return "provenance: none: this file predates the provenance block" + where


# ------------------------------------------------------------------------------------------------ renderers
def build_time(data: dict[str, Any]) -> list[str]:
    rows = []
    for label, run in sorted(data.get("runs", {}).items()):
        stages = run.get("stage_times_s", {})
        acc = run.get("accuracy", {})
        rows.append([label, fmt(run.get("cpu")), fmt(run.get("commit")), fmt(run.get("wall_s")),
                     fmt(stages.get("teacher")), fmt(stages.get("distill")), fmt(acc.get("teacher")),
                     fmt(acc.get("student_kd")), fmt(acc.get("student_alone"))])
    return table(["run", "cpu", "commit", "wall s", "teacher s", "distill s", "teacher acc", "KD acc", "alone acc"],
                 rows)


def teacher_precision(data: dict[str, Any]) -> list[str]:
    rows = [[key, fmt(run.get("mode")), fmt(run.get("seed", 0)), fmt(run.get("cpu")), fmt(run.get("optimisations")),
             fmt(run.get("test_accuracy")), fmt(run.get("best_val_accuracy")), fmt(run.get("epoch_time_s"))]
            for key, run in sorted(data.get("runs", {}).items())]
    return table(["run", "mode", "seed", "cpu", "optimisations", "test acc", "val acc", "s/epoch"], rows)


def student_seed_noise(data: dict[str, Any]) -> list[str]:
    rows = [[fmt(s.get("seed")), fmt(dig(s, "kd", "val")), fmt(dig(s, "kd", "test")), fmt(dig(s, "alone", "val")),
             fmt(dig(s, "alone", "test")), fmt(s.get("gain"))] for s in data.get("seeds", [])]
    lines = [f"Teacher {fmt(dig(data, 'teacher', 'arch'))} (test {fmt(dig(data, 'teacher', 'test'))}), "
             f"{fmt(data.get('epochs'))} student epochs.", ""]
    lines += table(["seed", "KD val", "KD test", "alone val", "alone test", "gain (test)"], rows)
    summary = data.get("summary", {})
    lines += table(["over seeds", "mean", "sd", "min", "max"],
                   [[key, *(fmt(v.get(k)) for k in ("mean", "sd", "min", "max"))] for key, v in summary.items()])
    return lines


def two_core_scaling(data: dict[str, Any]) -> list[str]:
    rows = [[fmt(m.get("name")), fmt(m.get("single_2_threads_samples_per_s")),
             fmt(m.get("pair_1_thread_each_samples_per_s")), fmt(m.get("threads_in_one_process_samples_per_s")),
             fmt(m.get("throughput_ratio_median")), fmt(m.get("threads_ratio_median"))]
            for m in data.get("models", [])]
    return table(["model", "one run, 2 threads (samples/s)", "two processes, 1 thread each",
                  "two threads in one process", "ratio (processes)", "ratio (threads)"], rows)


def formats(data: dict[str, Any]) -> list[str]:
    rows = [[fmt(r.get("format")), fmt(r.get("precision")), fmt(r.get("size_bytes")), fmt(r.get("accuracy")),
             fmt(r.get("top1_agreement")), fmt(r.get("p50_ms")), fmt(r.get("speed_vs_fp32")), fmt(r.get("runtime"))]
            for r in data.get("rows", [])]
    return table(["format", "precision", "bytes", "accuracy", "top-1 agreement", "p50 ms", "speed vs fp32", "runtime"],
                 rows)


def best_epochs(runs: list[dict[str, Any]]) -> str:
    """'9/14, 8/13': each run's best validation epoch of the epochs it ran (a plateau: the first below the second)."""
    return ", ".join(f"{r['best_epoch']}/{r['epochs_run']}" for r in runs if "epochs_run" in r) or "-"


def kd_quality(data: dict[str, Any]) -> list[str]:
    alone = data.get("alone", {})
    rows = [["alone", fmt(alone.get("accuracy_mean")), fmt(alone.get("accuracy_std")),
             fmt(alone.get("val_accuracy_mean")), "-", "-", best_epochs(alone.get("runs", []))]]
    rows += [[name, fmt(m.get("accuracy_mean")), fmt(m.get("accuracy_std")), fmt(m.get("val_accuracy_mean")),
              fmt(m.get("gain_vs_alone_points")), fmt(m.get("epoch_time_ratio_vs_alone")),
              best_epochs(m.get("runs", []))]
             for name, m in data.get("methods", {}).items()]
    epochs = dig(data, "teacher", "epochs")
    lines = [f"Teacher {fmt(dig(data, 'teacher', 'arch'))}" + (f" ({epochs} epochs)" if epochs else "") +
             f": test {fmt(dig(data, 'teacher', 'accuracy'))}; "
             f"method selected on validation: {fmt(data.get('selected_on_val'))}.", ""]
    if "progress" in data:  # measured at convergence (issue 31): finished runs and the verdict from them
        lines += [f"Runs finished: {fmt(dig(data, 'progress', 'done'))}/{fmt(dig(data, 'progress', 'expected'))}; "
                  f"verdict: {fmt(data.get('verdict'))}.", ""]
    return lines + table(["method", "test acc mean", "sd", "val acc mean", "gain vs alone (points)",
                          "epoch time vs alone", "best epoch / epochs run"], rows)


def text_kd(data: dict[str, Any]) -> list[str]:
    """Per method mean and sd over seeds, then one row per seed's build."""
    summary = data.get("summary", {})
    rows = [[m, fmt(dig(summary, m, "mean")), fmt(dig(summary, m, "std")), fmt(dig(summary, m, "n"))]
            for m in ("teacher", "kd", "alone", "int8")]
    lines = [f"Seeds finished: {fmt(dig(data, 'progress', 'done'))}/{fmt(dig(data, 'progress', 'expected'))}; "
             f"KD minus alone {fmt(dig(summary, 'kd_minus_alone_points', 'mean'))} points; verdict: "
             f"{fmt(data.get('verdict'))}.", ""]
    lines += table(["model", "test acc mean", "sd", "seeds"], rows)
    seeds = [[fmt(r.get(k)) for k in ("seed", "student", "shipped", "int8_drop_points", "student_p50_ms",
                                      "teacher_p50_ms_same_runtime", "tokenize_p50_ms")] for r in data.get("seeds", [])]
    return lines + table(["seed", "student", "shipped", "int8 drop (points)", "student p50 ms",
                          "teacher p50 ms (same runtime)", "tokenize p50 ms"], seeds)


def arm_parity(data: dict[str, Any]) -> list[str]:
    """One row per build and shipped artifact: the target core's emulated run against this host, and the control."""
    rows = []
    for label, row in (data.get("rows") or {}).items():
        emulation = row.get("emulation", {})
        for a in row.get("artifacts", []):
            rows.append([fmt(label), fmt(a.get("artifact")), fmt(a.get("runtime_emulated")), fmt(emulation.get("core")),
                         fmt(a.get("samples")), fmt(a.get("accuracy_host")), fmt(a.get("accuracy_emulated")),
                         fmt(a.get("top1_agreement")), fmt(a.get("max_abs_logit_diff")), fmt(a.get("bit_exact")),
                         fmt(dig(a, "control_vs_target_core", "top1_agreement")),
                         fmt(dig(emulation, "environment", "setup_s"))])
    verdicts = [f"- {label}: {text}" for label, text in (data.get("verdict") or {}).items()]
    return verdicts + [""] + table(["build", "artifact", "runtime (aarch64)", "emulated core", "test samples",
                                    "acc x86", "acc emulated", "top-1 agreement", "max logit diff", "bit-exact",
                                    "agreement on QEMU max CPU", "set-up s (from nothing)"], rows)


def mean_sd(student: dict[str, Any]) -> str:
    """A student's mean accuracy, with its standard deviation over the seeds where the file has one."""
    sd = student.get("accuracy_std")
    return fmt(student.get("accuracy")) + ("" if sd is None else f" +- {fmt(sd)}")


def latency_selection(data: dict[str, Any]) -> list[str]:
    """One row per data set x target x budget: both students' mean test accuracy over the seeds and shipped p95."""
    rows = []
    for b in data.get("budgets", []):
        lat, mac = b.get("latency_selected") or {}, b.get("mac_selected") or {}
        rows.append([fmt(Path(str(b.get("data", ""))).name), fmt(b.get("target")) + (" (host proxy)" if
                     b.get("host_proxy") else ""), fmt(b.get("latency_budget_ms")),
                     mean_sd(lat) if lat else "nothing fits",
                     fmt(lat.get("p95_ms")), fmt(lat.get("chosen_by")),
                     mean_sd(mac), fmt(mac.get("p95_ms")),
                     fmt(mac.get("meets_budget")), fmt(b.get("selection_cost_s")),
                     fmt(b.get("selection_cost_pct_of_build"))])
    lines = [f"Seeds {fmt(data.get('seeds'))}, {fmt(data.get('student_epochs'))} student epochs; prediction error "
             f"{fmt(data.get('prediction_error_pct'))} %; verdict: "
             f"{fmt(dig(data, 'verdict', 'passed', default=data.get('verdict')))}.", ""]
    return lines + table(["data", "target", "budget ms", "latency-selected acc", "its p95 ms", "chosen by",
                          "MAC-selected acc", "its p95 ms", "MAC student fits", "selection s", "% of build"], rows)


def gate_noise(data: dict[str, Any]) -> list[str]:
    """One row per way of holding the baseline: the same artifact's false alarms, each slowdown's detection."""
    metrics = ("latency_ms_p5", "latency_ms_p50", "latency_ms_p95")
    top = "same job (--baseline-run)" if "stored_number" in data else "stored number, blocks (before issue 36)"
    modes = [(top, data)] + [(label, data[key]) for key, label in (
        ("stored_number", "stored number, processes"), ("stored_number_blocks_only", "stored number, blocks only"))
        if isinstance(data.get(key), dict)]
    factors = [s.get("target_factor") for s in data.get("slowdowns", [])]
    rows = []
    for label, m in modes:
        alarms = m.get("same_false_alarms_by") or {}
        detected = {s.get("target_factor"): f"{fmt(s.get('detected'))}/{fmt(s.get('total'))}"
                    for s in m.get("slowdowns", [])}
        rows.append([label, f"{fmt(m.get('same_pass'))}/{fmt(m.get('same_total'))}",
                     "/".join(fmt(alarms.get(k)) for k in metrics),
                     "/".join(fmt(dig(m, "same_median_mdr_pct", k)) for k in metrics),
                     *(detected.get(f, "-") for f in factors)])
    verdict = f"verdict: {fmt(data['verdict'])}" if "verdict" in data else f"status: {fmt(data.get('status'))}"
    lines = [f"{verdict[0].upper()}{verdict[1:]}; {fmt(data.get('repeats'))} repeats, "
             f"--max-regression {fmt(data.get('max_regression_pct'))} %; slower artifacts, target -> measured "
             "factor: " + ", ".join(f"{fmt(s.get('target_factor'))}x -> {fmt(s.get('factor'))}"
                                    for s in data.get("slowdowns", [])) + ".", ""]
    return lines + table(["baseline", "same artifact passed", "false alarms p5/p50/p95", "median MDR % p5/p50/p95",
                          *(f"detected at {fmt(f)}x" for f in factors)], rows)


def generic(data: dict[str, Any]) -> list[str]:
    """Scalar fields as a two-column table, then the first list of row objects as a table of its scalar columns."""
    scalars = [[key, fmt(value)] for key, value in data.items() if is_scalar(value) and key != "provenance"]
    lines = table(["field", "value"], scalars) if scalars else []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = [c for c in value[0] if is_scalar(value[0][c])]
            lines += [f"`{key}`:", ""] + table(columns, [[fmt(row.get(c)) for c in columns] for row in value])
            break
    return lines


def verdict_lines(verdict: Any) -> list[str]:
    """One line, or a bullet per entry when a dict verdict is long (one finding per model, say)."""
    lead = "Verdict (computed by the script from the rows)"
    if isinstance(verdict, dict) and len(verdict) > 3:
        return [f"{lead}:", "", *(f"- {key}: {fmt(value)}" for key, value in verdict.items()), ""]
    return [f"{lead}: {fmt(verdict)}.", ""]


# renderers that state the verdict in their own words; every other file's verdict is stated above its table
SHOWS_VERDICT = {arm_parity, kd_quality, latency_selection, gate_noise, text_kd}


RENDERERS: dict[str, Renderer] = {
    "arm_parity": arm_parity,
    "build_time": build_time,
    "teacher_precision": teacher_precision,
    "student_seed_noise_teacher_cnn": student_seed_noise,
    "student_seed_noise_teacher_resnet": student_seed_noise,
    "two_core_scaling": two_core_scaling,
    "formats": formats,
    "kd_quality": kd_quality,  # and every kd_quality_<data set>[_<variant>].json: a renderer per script
    "latency_selection": latency_selection,
    "gate_noise": gate_noise,
    "text_kd": text_kd,
}


# ------------------------------------------------------------------------------------------------ the page
def script_of(stem: str) -> str:
    """The benchmark script that writes ``stem``.json (the longest script name that prefixes it)."""
    scripts = sorted((p.stem for p in (ROOT / "benchmarks").glob("*.py")), key=len, reverse=True)
    return next((f"benchmarks/{s}.py" for s in scripts if stem.startswith(s)), "(no script found)")


def section(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    head = [f"## {path.stem}", "", f"`benchmarks/results/{path.name}`, written by `{script_of(path.stem)}`; "
            f"{measured_on(data) if isinstance(data, dict) else 'provenance: none'}.", ""]
    if not isinstance(data, dict):
        return head + ["(not a JSON object)", ""]
    renderer = RENDERERS.get(path.stem) or RENDERERS.get(Path(script_of(path.stem)).stem, generic)
    if "verdict" in data and renderer not in SHOWS_VERDICT and not (renderer is generic and
                                                                     is_scalar(data["verdict"])):
        head += verdict_lines(data["verdict"])
    return head + renderer(data)


def render(results: Path = RESULTS) -> str:
    files = sorted(results.glob("*.json"))
    lines = ["# Measurements", "",
             "Generated by `python docs/measurements.py` from `benchmarks/results/*.json`: do not edit by hand. "
             "Each section names the file and the script that wrote it; the JSON holds every row and setting. "
             "Numbers from a file without provenance are kept for the record and re-measured over time.", "",
             "Files: " + ", ".join(f"[{p.stem}](#{p.stem})" for p in files) + ".", ""]
    for path in files:
        lines += section(path)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/measurements.md is out of date")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != page:
            print(f"{PAGE} is out of date: run python docs/measurements.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
