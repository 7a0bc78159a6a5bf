"""Build stages on their own: the int8 contract (compress), the precision choice, the stage waterfall."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_dataset
from test_accuracy_aware import make_hostile

from edgekd.backends import Artifact
from edgekd.compress.calibration import build_calibration_set
from edgekd.errors import ContractError
from edgekd.stages.choose import choose_shipped
from edgekd.stages.compress import backend_for, plan_int8
from edgekd.stages.context import BuildContext, BuildOptions
from edgekd.stages.export import Built
from edgekd.stages.measure import Measured
from edgekd.targets import load_target


@pytest.fixture(scope="module")
def hostile():
    return make_hostile()


def _target(max_drop: float | None = 0.02, fmt: str = "onnx", precision="int8", **budgets):
    t = load_target("x86-cpu")
    runtime = t.runtime.model_copy(update={"format": fmt, "also": [], "precision": precision})
    return t.model_copy(update={"runtime": runtime, "budgets": t.budgets.model_copy(
        update={"max_quantization_drop": max_drop, **budgets})})


def _ctx(target, data, tmp_path: Path, **options) -> BuildContext:
    opts = BuildOptions(target="x86-cpu", progress=False, log=lambda m: None, **options)
    return BuildContext(opts, target, data, tmp_path / "run")


def _without_test_split(data):
    """The same data with a test split no search may read: NaN inputs, out-of-range labels."""
    import copy

    import numpy as np

    poisoned = copy.copy(data)
    poisoned.x_test = np.full_like(data.x_test, np.nan)
    poisoned.y_test = np.full_like(data.y_test, 10**6)
    return poisoned


def test_backends_get_the_builds_cache_and_none_with_no_cache(tmp_path):
    data = make_dataset()
    assert backend_for(_ctx(_target(), data, tmp_path, teacher_cache=tmp_path / "c"), "onnx").cache_dir == \
        tmp_path / "c"
    assert backend_for(_ctx(_target(), data, tmp_path, teacher_cache=None), "onnx").cache_dir is None
    assert not hasattr(backend_for(_ctx(_target(), data, tmp_path), "openvino"), "cache_dir")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_tight_contract_keeps_sensitive_layers_float(hostile, tmp_path, fmt):
    model, data = hostile
    data = _without_test_split(data)  # the search decides on the validation split alone
    ctx = _ctx(_target(0.002, fmt), data, tmp_path, max_float_fraction=0.7)
    plan = plan_int8(ctx, fmt, model, None, build_calibration_set(data, 64), tmp_path)
    aa = plan.artifact.details["accuracy_aware"]
    assert aa["float_layers"] and max(aa["drop"]) <= 0.002
    assert min(aa["plain_int8_accuracy"]) < min(aa["fp32_accuracy"]) - 0.002  # plain int8 broke the contract
    assert plan.reference == "student" and plan.artifact.path.exists()
    assert not list(tmp_path.glob(".search_fp32*"))  # the search's fp32 file is not left in the staging dir


@pytest.mark.slow
def test_impossible_contract_ships_nothing(hostile, tmp_path):
    model, data = hostile
    ctx = _ctx(_target(0.002), data, tmp_path, max_float_fraction=0.0)
    with pytest.raises(ContractError, match="nothing was shipped"):
        plan_int8(ctx, "onnx", model, None, build_calibration_set(data, 64), tmp_path)
    assert not (tmp_path / "model_int8.onnx").exists()


def _measured(name: str, fmt: str, precision: str, val: float, p50: float, details=None) -> Measured:
    artifact = Artifact(Path(name), fmt, precision, [Path(name)], details or {})
    return Measured(Built(artifact, "student", {}, val), {}, {"latency_ms": {"p50": p50}})


def test_choice_is_the_fastest_precision_that_keeps_the_contract_on_validation(tmp_path):
    ctx = _ctx(_target(0.01, precision=["fp32", "fp16", "int8"], min_accuracy_ratio=None), make_dataset(), tmp_path)
    rows = [_measured("model_fp32.onnx", "onnx", "fp32", 0.90, 1.0),
            _measured("model_fp16.onnx", "onnx", "fp16", 0.90, 1.2),
            _measured("model_int8.onnx", "onnx", "int8", 0.85, 0.5)]  # fastest, but loses 5 points on val
    shipped, reasons = choose_shipped(ctx, rows, student_val=0.90, teacher_val=0.95)
    assert shipped == {"model_fp32.onnx"}
    assert "int8 failed the accuracy contract (validation drop 0.0500)" in reasons["onnx"]
    rows[2] = _measured("model_int8.onnx", "onnx", "int8", 0.895, 0.5)
    assert choose_shipped(ctx, rows, 0.90, 0.95)[0] == {"model_int8.onnx"}


def test_no_precision_meeting_the_contract_ships_nothing(tmp_path):
    ctx = _ctx(_target(0.01), make_dataset(), tmp_path)
    with pytest.raises(ContractError, match="nothing was shipped"):
        choose_shipped(ctx, [_measured("model_int8.onnx", "onnx", "int8", 0.5, 0.5)], 0.9, 0.95)


def test_a_student_short_of_the_teacher_ratio_still_ships_and_leaves_the_ratio_to_the_gate(tmp_path):
    """fp32 itself is at 0.80 / 0.95 = 0.84 x the teacher (< 0.97): no precision can fix that, so the precision is
    chosen on its quantization drop; an int8 that also drops too much is still refused."""
    ctx = _ctx(_target(0.01, min_accuracy_ratio=0.97), make_dataset(), tmp_path)
    rows = [_measured("model_int8.onnx", "onnx", "int8", 0.795, 0.5)]
    shipped, reasons = choose_shipped(ctx, rows, student_val=0.80, teacher_val=0.95)
    assert shipped == {"model_int8.onnx"} and "min_accuracy_ratio not judged here" in reasons["onnx"]
    with pytest.raises(ContractError, match="nothing was shipped"):
        choose_shipped(ctx, [_measured("model_int8.onnx", "onnx", "int8", 0.70, 0.5)], 0.80, 0.95)
    # a student that meets the ratio keeps the whole contract: int8 under the ratio is refused
    with pytest.raises(ContractError, match="nothing was shipped"):
        choose_shipped(ctx, [_measured("model_int8.onnx", "onnx", "int8", 0.918, 0.5)], 0.925, 0.95)


def test_a_qat_artifact_is_judged_against_its_own_model(tmp_path):
    """QAT retrains: its drop is measured against the QAT model's own fp32 accuracy, not the old student's."""
    ctx = _ctx(_target(0.01, min_accuracy_ratio=None), make_dataset(), tmp_path)
    qat = _measured("model_int8.onnx", "onnx", "int8", 0.80, 0.5, {"qat": {"val_accuracy_fp32_after": 0.805}})
    shipped, reasons = choose_shipped(ctx, [qat], student_val=0.90, teacher_val=0.95)
    assert shipped == {"model_int8.onnx"} and "validation drop 0.0050" in reasons["onnx"]


def test_waterfall_measures_every_stage_in_the_primary_format():
    from factories import make_report

    from edgekd.models.budget import StudentChoice
    from edgekd.stages.report import TestScores, stage_waterfall

    report = make_report()
    rows = report["artifacts"]
    choice = StudentChoice("mobilenetv2", {}, 200_000, 3_000_000, 10**6, 10**8, 1, 1)
    scores = TestScores(0.99, 0.98, 0.985, None, None)
    plain = stage_waterfall("onnx", rows, report["teacher"], None, choice, scores)
    assert [s["stage"] for s in plain] == ["teacher", "student", "quantized"]
    assert plain[1]["artifact"] == "model_fp32.onnx" and plain[2]["artifact"] == "model_int8.onnx"
    unpruned = {**rows[2], "path": "unpruned_fp32.onnx"}
    pruned = stage_waterfall("onnx", rows, report["teacher"], unpruned, choice, scores)
    assert [s["stage"] for s in pruned] == ["teacher", "student", "pruned", "quantized"]
    assert pruned[1]["macs"] == 3_000_000 and pruned[1]["accuracy"] == 0.985  # the unpruned student, before pruning
