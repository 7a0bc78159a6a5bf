"""Stage: report.json — every number measured in this run, with where it came from."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd import __version__
from edgekd.device_identity import measured_on_fields
from edgekd.distill.fast import cpu_name
from edgekd.distill.trainer import accuracy
from edgekd.gate_stats import median_interval
from edgekd.io import dumps
from edgekd.models.budget import StudentChoice, count_macs, count_params
from edgekd.schema import REPORT_SCHEMA_VERSION, ArtifactRow, Report, Selection, ShippedPrediction, TrainingRun
from edgekd.stages.compress import Compressed
from edgekd.stages.context import BuildContext
from edgekd.stages.distill import Distilled
from edgekd.stages.measure import Measured, teacher_format_for
from edgekd.stages.teacher import Teachers

# Manifest-entry details copied into the artifact's report row.
_DETAIL_KEYS = ("scheme", "scheme_p50_ms", "reduce_range", "seven_bit_for_device", "kernel_deviation", "layout",
                "input_dtype", "input_quantization", "output_quantization", "accuracy_aware", "qat", "float_ops")


@dataclass
class TestScores:
    """Test-split accuracy of the PyTorch models, scored once, after every choice was made."""

    teacher: float
    student: float  # the shipped fp32 student (after compression)
    student_uncompressed: float  # the KD student before pruning: what kd_gain compares
    alone: float | None
    qat: float | None  # the QAT model, when one made an int8 artifact

    @staticmethod
    def of(ctx: BuildContext, teacher_logits: np.ndarray, student_logits: np.ndarray, distilled: Distilled,
           compressed: Compressed) -> TestScores:
        x, y = ctx.data.x_test, ctx.data.y_test
        qat = next((p.model for p in compressed.int8.values() if p.reference == "qat"), None)
        student = float((student_logits.argmax(1) == y).mean())
        return TestScores(float((teacher_logits.argmax(1) == y).mean()), student,
                          student if compressed.unpruned is None else accuracy(compressed.unpruned, x, y),
                          None if distilled.alone is None else accuracy(distilled.alone.model, x, y),
                          None if qat is None else accuracy(qat, x, y))


def machine_summary(ctx: BuildContext, runner_machine: dict) -> dict:
    """The build host, and whether it counts as the target device (``device_identity``: never by arch alone)."""
    return {**runner_machine, **measured_on_fields(ctx.target, runner_machine, ctx.options.as_target),
            "how": "edgekd runner.py in a fresh process on this host", "threads": ctx.threads}


def artifact_row(m: Measured, scores: TestScores, macs: int, params: int) -> dict[str, Any]:
    r, e, b = m.result, m.entry, m.built
    lat = r["latency_ms"]
    row = {
        "path": e["path"], "format": e["format"], "precision": e["precision"], "runtime": r["runtime"]["name"],
        "runtime_version": r["runtime"]["version"], "sha256": e["sha256"], "size_bytes": e["size_bytes"],
        "accuracy": r.get("accuracy"), "val_accuracy": b.val_accuracy,
        "agreement_with_teacher": r.get("agreement_with_teacher"),
        "latency_ms": {k: lat[k] for k in ("p50", "p90", "p95", "p99", "mean", "std")},
        "noise_pct": lat["noise_pct"], "peak_memory_mb": r.get("peak_memory_mb"), "memory": r.get("memory"),
        "latency_ms_detail": lat, "per_class_accuracy": r.get("per_class_accuracy"),
        "predictions": r.get("predictions"), "load_ms": r["load_ms"], "first_inference_ms": r["first_inference_ms"],
        "preprocess": r.get("preprocess"),
        "inference_precision": r["runtime"].get("inference_precision"),
        "torch_imported_in_runner": r["torch_imported"], "macs": macs, "params": params,
        "reference": b.reference,
        "reference_accuracy": scores.qat if b.reference == "qat" else scores.student,
        **{k: e[k] for k in _DETAIL_KEYS if k in e},
    }
    if e["precision"] == "int8" and e.get("float_ops"):  # e.g. a text model's embedding lookup stays float
        row["precision_detail"] = f"int8 weights and activations; in float: {', '.join(e['float_ops'])}"
    if b.role == "student":
        row["parity"] = b.checks["parity"]
        row["operators"] = b.checks.get("operators")
        if "delegate" in b.checks:
            row["delegate"] = b.checks["delegate"]
    return row


def teacher_section(teachers: Teachers, scores: TestScores, by_format: dict[str, dict], primary: str) -> dict:
    t, row = teachers.primary, by_format[primary]
    return {
        "source": t.source, "arch": t.arch, "description": t.description, "params": teachers.params,
        "macs": teachers.macs, "accuracy": scores.teacher, "size_bytes": row["size_bytes"],
        "latency_ms": row["latency_ms"], "peak_memory_mb": row["peak_memory_mb"],
        "benchmarked_as": f"{row['path']} ({row['runtime']} fp32, same runner and threads)",
        "by_format": {fmt: {k: r[k] for k in ("path", "runtime", "size_bytes", "latency_ms", "peak_memory_mb",
                                              "accuracy")} for fmt, r in by_format.items()},
        "training": teachers.training.summary() if teachers.training else None,
        # a default teacher edgekd trained: its builder's arguments (--teacher-config), to rebuild it by name
        **({"arch_config": t.config} if t.source.startswith("trained-default") else {}),
    }


def student_section(choice: StudentChoice, distilled: Distilled, compressed: Compressed, scores: TestScores,
                    teacher_macs: int, input_shape: tuple[int, ...]) -> dict:
    macs, params = count_macs(compressed.student, input_shape), count_params(compressed.student)
    return {
        "family": choice.family, "config": choice.config, "params": params, "macs": macs,
        "accuracy": scores.student, "accuracy_before_compression": scores.student_uncompressed,
        "accuracy_trained_alone": scores.alone,
        "kd_gain": None if scores.alone is None else scores.student_uncompressed - scores.alone,
        "kd_gain_compares": "the KD student and the same student trained alone, both before any compression "
                            "(same configuration, epochs, seed and initial weights)",
        "macs_ratio_to_teacher": macs / teacher_macs if teacher_macs else None,
        "budget_fit": choice.to_dict(), "distillation": distilled.kd.summary(),
        "trained_alone": distilled.alone.summary() if distilled.alone else None,
    }


def selection_section(choice: StudentChoice, rows: list[ArtifactRow], build_time_s: float | None = None
                      ) -> Selection | None:
    """``student.selection``, assembled here alone: the search's record (``choice.selection``), what it expected of
    the shipped artifact against what the benchmark measured, and the accuracy search's share of the build."""
    if not choice.selection:
        return None
    sel = Selection.model_validate_json(dumps(choice.selection))
    if sel.accuracy is not None and build_time_s:
        sel.accuracy.pct_of_build = round(100.0 * sel.accuracy.time_s / build_time_s, 2)
    if sel.mode == "latency":
        sel.shipped_prediction = shipped_prediction(sel, rows)
    return sel


def shipped_prediction(sel: Selection, rows: list[ArtifactRow]) -> ShippedPrediction | None:
    """The latency search's chosen candidate (timed on random weights, and predicted) against the shipped artifact
    in the searched format, at the search's percentile; None when either is missing."""
    pct = sel.percentile
    row = next((r for r in rows if r.format == sel.format and r.shipped), None)
    chosen = next((c for c in sel.candidates if c.status == "chosen"), None)
    if row is None or chosen is None or pct is None:
        return None
    measured = float(getattr(row.latency_ms, f"p{pct}"))
    predicted, stated = chosen.predicted_ms, sel.stated_budget_ms
    timed = None if chosen.latency_ms is None else chosen.latency_ms.value
    return ShippedPrediction(
        artifact=row.path, percentile=pct, selection_ms=timed, predicted_ms=predicted, measured_ms=measured,
        error_pct=None if predicted is None or measured <= 0 else 100.0 * (predicted - measured) / measured,
        drift_pct=None if not timed else 100.0 * (measured - timed) / timed,
        stated_budget_ms=stated, meets_stated_budget=None if stated is None else measured <= stated)


def stage_waterfall(primary: str, rows: list[dict], teacher: dict, unpruned: dict | None, choice: StudentChoice,
                    scores: TestScores) -> list[dict]:
    """teacher -> student -> [pruned] -> quantized, each measured in this run in the target's primary format."""
    fp32 = next(r for r in rows if r["format"] == primary and r["precision"] == "fp32")
    shipped = next(r for r in rows if r["format"] == primary and r["shipped"])

    def stage(name: str, row: dict, accuracy: float, params: int, macs: int) -> dict:
        return {"stage": name, "artifact": row["path"], "accuracy": accuracy, "params": params, "macs": macs,
                "size_bytes": row["size_bytes"], "p50_ms": row["latency_ms"]["p50"]}

    t_row = teacher["by_format"].get(primary) or next(iter(teacher["by_format"].values()))
    out = [stage("teacher", t_row, teacher["accuracy"], teacher["params"], teacher["macs"])]
    if unpruned is not None:
        out.append(stage("student", unpruned, scores.student_uncompressed, choice.params, choice.macs))
        out.append(stage("pruned", fp32, fp32["accuracy"], fp32["params"], fp32["macs"]))
    else:
        out.append(stage("student", fp32, fp32["accuracy"], fp32["params"], fp32["macs"]))
    out.append(stage("quantized", shipped, shipped["accuracy"], shipped["params"], shipped["macs"]))
    return out


def compare_with_teacher(row: dict, t_row: dict, versus: dict | None) -> None:
    """The row's speed against the teacher: from the interleaved timing when the runner made one (what the gate
    judges), else from the two separate runs' p50 (older runners)."""
    if versus:
        low, high = median_interval(versus["ratios"])
        row["latency_vs_teacher"] = {"ratio": versus["ratio"], "ratio_interval_95": (low, high),
                                     "pairs": versus["pairs"], "teacher_artifact": versus["artifact"],
                                     "p50_ms": versus["p50_ms"], "teacher_p50_ms": versus["versus_p50_ms"],
                                     "how": versus["how"]}
        row["teacher_p50_ms_same_runtime"] = versus["versus_p50_ms"]
        row["speed_vs_teacher"] = 1.0 / versus["ratio"]
    else:
        row["teacher_p50_ms_same_runtime"] = t_row["latency_ms"]["p50"]
        row["speed_vs_teacher"] = row["teacher_p50_ms_same_runtime"] / row["latency_ms"]["p50"]
    if t_row["format"] != row["format"]:
        row["teacher_runtime"] = t_row["runtime"]


def make_report(ctx: BuildContext, teachers: Teachers, choice: StudentChoice, distilled: Distilled,
                compressed: Compressed, measured: list[Measured], shipped: set[str], reasons: dict[str, str],
                scores: TestScores, calibration: dict, eval_inputs: dict) -> Report:
    """report.json's model, every number from this run; ``complete`` adds the timings once the build ends."""
    shape, primary = ctx.data.input_shape, ctx.target.runtime.format
    macs, params = count_macs(compressed.student, shape), count_params(compressed.student)
    rows = [artifact_row(m, scores, macs, params) for m in measured if m.built.role == "student"]
    teacher_rows = {m.built.artifact.format: artifact_row(m, scores, teachers.macs, teachers.params)
                    for m in measured if m.built.role == "teacher-reference"}
    unpruned = next((artifact_row(m, scores, choice.macs, choice.params) for m in measured
                     if m.built.role == "unpruned-reference"), None)
    fp32_p50 = {r["format"]: r["latency_ms"]["p50"] for r in rows if r["precision"] == "fp32"}
    # A teacher given as ONNX / scikit-learn may exist only in onnxruntime: the rows then say so (teacher_runtime).
    teacher_fmt = teacher_format_for(primary, teacher_rows, primary)
    versus = {m.built.artifact.path.name: m.result.get("versus") for m in measured if m.built.role == "student"}
    for row in rows:
        row["shipped"] = row["path"] in shipped
        row["speed_vs_fp32"] = fp32_p50[row["format"]] / row["latency_ms"]["p50"]
        t_row = teacher_rows[teacher_format_for(row["format"], teacher_rows, primary)]
        compare_with_teacher(row, t_row, versus.get(row["path"]))
    teacher = teacher_section(teachers, scores, teacher_rows, teacher_fmt)
    versions = {r["runtime"]: r["runtime_version"] for r in rows}
    report = {
        "schema_version": REPORT_SCHEMA_VERSION, "edgekd_version": __version__, "target": ctx.target.name,
        "target_path": str(Path(ctx.target.path).resolve()), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "measured_on": {**machine_summary(ctx, measured[0].result["machine"]),
                        "runtime_versions": {**versions, "python": platform.python_version(),
                                             "torch": torch.__version__}},
        "data": ctx.data.describe(), "eval_inputs": eval_inputs, "teacher": teacher,
        "student": student_section(choice, distilled, compressed, scores, teachers.macs, shape),
        "calibration": calibration,
        "pruning": compressed.pruning.to_dict() if compressed.pruning else None,
        "artifacts": rows, "precision_choice": reasons,
    }
    report["stages"] = stage_waterfall(primary, rows, teacher, unpruned, choice, scores)
    report["training_optimisations"] = training_optimisations(ctx, teachers, distilled)
    return as_model(report)


def as_model(report: dict[str, Any]) -> Report:
    """The assembled report as a ``schema.Report`` (numpy values become plain numbers first); a field that does not
    validate is a bug of this module, raised here before anything is written."""
    return Report.model_validate_json(dumps(report))


def complete(report: Report, choice: StudentChoice, training: dict[str, Any], stage_times_s: dict[str, float],
             build_time_s: float) -> Report:
    """What only the end of the build knows: where the students trained (``stages.distill.training_record``), the
    stage times, and the selection with its share of the build."""
    report.training = TrainingRun.model_validate_json(dumps(training))
    report.stage_times_s = dict(stage_times_s)
    report.build_time_s = build_time_s
    report.student.selection = selection_section(choice, report.artifacts, build_time_s)
    return report


def training_optimisations(ctx: BuildContext, teachers: Teachers, distilled: Distilled) -> dict[str, Any]:
    """What the fast path switched on per training run (the trainer's ``details["optimisations"]``)."""
    def used(result) -> list[str] | None:
        return None if result is None else list(result.details.get("optimisations", []))

    return {"enabled": ctx.options.fast_train, "cpu": cpu_name(), "teacher": used(teachers.training),
            "student_kd": used(distilled.kd), "student_alone": used(distilled.alone),
            "side_by_side_threads": distilled.side_by_side_threads}
