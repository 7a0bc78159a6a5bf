"""The build's quantization contract, through the same code path `edgekd build` uses (export_artifacts)."""

from __future__ import annotations

import pytest
from test_accuracy_aware import make_hostile

from edgekd.api import BuildOptions, export_artifacts
from edgekd.compress.calibration import build_calibration_set
from edgekd.errors import ContractError
from edgekd.targets import load_target


@pytest.fixture(scope="module")
def hostile():
    return make_hostile()


def _target(max_drop: float, fmt: str = "onnx"):
    t = load_target("x86-cpu")
    runtime = t.runtime.model_copy(update={"format": fmt, "also": []})
    return t.model_copy(update={"runtime": runtime,
                                "budgets": t.budgets.model_copy(update={"max_quantization_drop": max_drop})})


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_tight_contract_keeps_sensitive_layers_float(hostile, tmp_path, fmt):
    model, data = hostile
    calibration = build_calibration_set(data, 64)
    options = BuildOptions(target="x86-cpu", max_float_fraction=0.7, progress=False, log=lambda m: None)
    built = export_artifacts(_target(0.002, fmt), model, data, calibration, tmp_path, options)
    int8 = next(a for a, _ in built if a.precision == "int8")
    aa = int8.details["accuracy_aware"]
    assert aa["float_layers"] and max(aa["drop"]) <= 0.002
    assert min(aa["plain_int8_accuracy"]) < min(aa["fp32_accuracy"]) - 0.002  # plain int8 broke the contract


@pytest.mark.slow
def test_impossible_contract_ships_nothing(hostile, tmp_path):
    model, data = hostile
    calibration = build_calibration_set(data, 64)
    options = BuildOptions(target="x86-cpu", max_float_fraction=0.0, progress=False, log=lambda m: None)
    with pytest.raises(ContractError, match="nothing was shipped"):
        export_artifacts(_target(0.002), model, data, calibration, tmp_path, options)
    assert not (tmp_path / "model_int8.onnx").exists()
