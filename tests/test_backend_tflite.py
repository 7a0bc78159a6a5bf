"""TFLite export: every precision loads in ai_edge_litert through the runner and keeps parity with PyTorch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")
pytest.importorskip("ai_edge_litert")

from edgekd.backends import Calibration, check_parity  # noqa: E402
from edgekd.errors import EdgekdError, MissingDependencyError  # noqa: E402
from edgekd.formats import get_backend  # noqa: E402
from edgekd.models.students import build_model  # noqa: E402
from edgekd.models.teachers import predict_logits  # noqa: E402
from edgekd.runner import load_session  # noqa: E402

RUNNER = Path(__file__).resolve().parents[1] / "edgekd" / "runner.py"


def _realistic_bn(model: nn.Module) -> nn.Module:
    for m in model.modules():  # BN statistics that quantization can get wrong
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "mobilenetv2": _realistic_bn(build_model("mobilenetv2", (1, 8, 8), 4, width=0.5, depth=1, expand=2)),
        "mlp": build_model("mlp", (1, 8, 8), 4, hidden=(32, 16)).eval(),
        "resnet": _realistic_bn(build_model("resnet", (1, 8, 8), 4, width=0.5, depth=1)),
    }


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def calibration(inputs) -> Calibration:
    return Calibration(inputs[:32], {"data": "test", "samples": 32})


@pytest.mark.parametrize("family", ["mobilenetv2", "mlp", "resnet"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "dynamic_int8", "int8"])
def test_export_parity(tmp_path, models, inputs, calibration, family, precision):
    model = models[family]
    artifact = get_backend("tflite").export(model, inputs[:1], tmp_path / "m.tflite", precision, calibration)
    assert artifact.path.exists() and artifact.files == [artifact.path]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]  # no temp files left beside it
    parity = check_parity(artifact, predict_logits(model, inputs), inputs)
    assert parity.passed, parity
    details = artifact.details
    assert details["layout"] == "NCHW" and details["input_shape"] == [1, 1, 8, 8]
    assert details["input_dtype"] == details["output_dtype"] == "float32"  # float I/O unless integer_io
    assert details["converter"].startswith("litert-torch")
    if precision == "fp32":
        assert parity.max_abs_diff < 1e-4
    else:
        assert "ai-edge-quantizer" in details["quantizer"]
    if precision == "int8":
        assert details["calibration"] == {"data": "test", "samples": 32}
        assert details["float_ops"] == []  # every arithmetic op runs in int8
        assert "QUANTIZE" in details["ops"] and "DEQUANTIZE" in details["ops"]


@pytest.mark.parametrize("family", ["mobilenetv2", "mlp"])
def test_integer_io(tmp_path, models, inputs, calibration, family):
    model = models[family]
    artifact = get_backend("tflite", integer_io=True).export(model, inputs[:1], tmp_path / "m.tflite", "int8",
                                                             calibration)
    details = artifact.details
    assert details["input_dtype"] == details["output_dtype"] == "int8"
    assert "QUANTIZE" not in details["ops"] and details["float_ops"] == []
    session = load_session(str(artifact.path), 1, "int8")
    for key, tensor in (("input_quantization", session.inp), ("output_quantization", session.out)):
        assert tensor["dtype"] == np.int8
        scale, zero = tensor["quantization"]
        assert details[key] == {"scale": pytest.approx(scale), "zero_point": zero}
    # The runner quantizes float inputs with the recorded parameters and dequantizes the int8 logits.
    parity = check_parity(artifact, predict_logits(model, inputs), inputs)
    assert parity.passed and parity.top1_agreement >= 0.98, parity
    assert json.dumps(details)  # JSON-ready for the manifest


def test_nchw_inputs_fed_in_their_channel_order(tmp_path):
    """Three channels and H != W: a layout mix-up (NCHW data read as NHWC) would break parity here."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 5)).eval()
    x = np.random.default_rng(1).normal(size=(16, 3, 6, 10)).astype(np.float32)
    artifact = get_backend("tflite").export(model, x[:1], tmp_path / "c3.tflite", "fp32", None)
    assert artifact.details["layout"] == "NCHW" and artifact.details["input_shape"] == [1, 3, 6, 10]
    session = load_session(str(artifact.path), 1, "fp32")
    assert session.input_shape == [1, 3, 6, 10]
    reference = predict_logits(model, x)
    assert np.abs(session.run_batched(x) - reference).max() < 1e-4
    swapped = np.ascontiguousarray(x[:, ::-1])  # channels in the wrong order must change the outputs
    assert np.abs(session.run_batched(swapped) - reference).max() > 1e-3


def test_artifact_runs_without_torch(tmp_path, models, inputs, calibration):
    artifact = get_backend("tflite", integer_io=True).export(models["mlp"], inputs[:1], tmp_path / "m.tflite",
                                                             "int8", calibration)
    np.save(tmp_path / "x.npy", inputs[:8])
    code = (
        "import importlib.util, sys, numpy as np\n"
        f"spec = importlib.util.spec_from_file_location('runner', {str(RUNNER)!r})\n"
        "runner = importlib.util.module_from_spec(spec); spec.loader.exec_module(runner)\n"
        f"s = runner.load_session({str(artifact.path)!r}, 1, 'int8')\n"
        f"y = s.run_batched(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(list(y.shape), str(y.dtype))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[8, 4] float32"


def test_bad_requests(tmp_path, models, inputs, calibration):
    backend = get_backend("tflite")
    model = models["mlp"]
    with pytest.raises(EdgekdError, match="no precision 'int4'"):
        backend.export(model, inputs[:1], tmp_path / "m.tflite", "int4", calibration)
    with pytest.raises(EdgekdError, match="needs a calibration set"):
        backend.export(model, inputs[:1], tmp_path / "m.tflite", "int8", None)
    with pytest.raises(EdgekdError, match="sample shape"):
        backend.export(model, inputs[:1], tmp_path / "m.tflite", "int8", Calibration(inputs[:4, :, :4], {}))
    assert list(tmp_path.iterdir()) == []


class _Odd(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.erfcx(x)


def test_unsupported_operator_names_operator_and_layer(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), _Odd()).eval()
    with pytest.raises(EdgekdError) as info:
        get_backend("tflite").export(model, np.zeros((1, 1, 8, 8), np.float32), tmp_path / "m.tflite", "fp32", None)
    assert "special_erfcx" in info.value.problem and "'2' (_Odd)" in info.value.problem
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_missing_dependency_names_the_extra(tmp_path, monkeypatch, inputs):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # import now raises ImportError
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgekd\[tflite\]'"):
        get_backend("tflite").export(model, inputs[:1], tmp_path / "m.tflite", "fp32", None)
