"""ONNX and OpenVINO export: every precision loads in its real runtime and keeps parity."""

import numpy as np
import pytest
import torch

from edgekd.backends import Artifact, Calibration, check_parity, parity_failure
from edgekd.errors import EdgekdError
from edgekd.formats import get_backend, get_format
from edgekd.models.students import build_model
from edgekd.models.teachers import predict_logits


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    model = build_model("mobilenetv2", (1, 8, 8), 4, width=0.5, depth=1, expand=2).eval()
    for m in model.modules():  # realistic BN statistics so quantization has something to get wrong
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def inputs():
    return np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_export_parity(tmp_path, student, inputs, fmt, precision):
    backend = get_backend(fmt)
    calibration = Calibration(inputs[:32], {"data": "test"})
    artifact = backend.export(student, inputs[:1], tmp_path / f"m{get_format(fmt).suffix}", precision, calibration)
    assert all(f.exists() for f in artifact.files)
    parity = check_parity(artifact, predict_logits(student, inputs), inputs)
    assert parity.passed, parity
    if precision == "fp32":
        assert parity.max_abs_diff < 1e-4
    if precision == "int8":
        assert artifact.details["calibration"] == {"data": "test"}


def test_broken_conversion_is_caught(tmp_path, student, inputs):
    artifact = get_backend("onnx").export(student, inputs[:1], tmp_path / "m.onnx", "fp32", None)
    wrong = predict_logits(student, inputs)[:, ::-1].copy()  # e.g. a layout mix-up
    parity = check_parity(artifact, wrong, inputs)
    assert not parity.passed
    error = parity_failure(artifact, parity)
    assert "m.onnx" in error.problem and "max abs diff" in error.problem


def test_bad_requests(tmp_path, student, inputs):
    with pytest.raises(EdgekdError, match="unknown format"):
        get_backend("coreml")
    with pytest.raises(EdgekdError, match="no precision"):
        get_backend("onnx").export(student, inputs[:1], tmp_path / "m.onnx", "int4", None)
    with pytest.raises(EdgekdError, match="empty"):
        Calibration(inputs[:0], {})
    with pytest.raises(EdgekdError, match="NaN"):
        Calibration(np.full((2, 1, 8, 8), np.nan, np.float32), {})


def test_missing_runtime_names_the_fix(tmp_path, inputs):
    bogus = Artifact(tmp_path / "missing.onnx", "onnx", "fp32", [])
    with pytest.raises(EdgekdError, match="does not run"):
        check_parity(bogus, np.zeros((2, 4), np.float32), inputs[:2])


def test_onnx_int8_scheme_changes_only_when_clearly_faster():
    """Where both schemes run alike, noise must not flip the artifact (and its accuracy) between two builds."""
    from edgekd.backends.onnx import SCHEME_MIN_GAIN, clearly_fastest
    from edgekd.timing import Interleaved

    alike = Interleaved({"u8s8": [1.00, 1.02, 0.99], "s8s8": [0.99, 1.00, 0.98]})
    assert clearly_fastest(alike, ["u8s8", "s8s8"]) == "u8s8"
    faster = 1.0 - 2 * SCHEME_MIN_GAIN
    clear = Interleaved({"u8s8": [1.0, 1.3, 1.0], "s8s8": [faster, 1.3 * faster, faster]})
    assert clearly_fastest(clear, ["u8s8", "s8s8"]) == "s8s8"
    assert clearly_fastest(Interleaved({"u8s8": [1.0]}), ["u8s8"]) == "u8s8"


@pytest.mark.slow  # 21 s CPU, 122 s wall at load 6: it times
def test_onnx_int8_scheme_is_measured_once_per_model_and_host_with_a_cache(tmp_path, student, inputs, monkeypatch):
    """A rebuild of the same model on the same machine reuses the scheme (and so its accuracy); no cache, no memo."""
    import edgekd.timing
    from edgekd.backends.onnx import OnnxBackend
    from edgekd.timing import Interleaved

    readings = iter([{"u8s8": [1.0] * 3, "s8s8": [0.5] * 3}, {"u8s8": [0.5] * 3, "s8s8": [1.0] * 3}] * 3)
    monkeypatch.setattr(edgekd.timing, "measure_interleaved", lambda *a, **k: Interleaved(next(readings)))
    monkeypatch.setattr("edgekd.backends.onnx.kernel_deviation", lambda *a, **k: 0.0)  # kernels compute the graph
    calibration = Calibration(inputs[:32], {"data": "test"})

    def build(cache):
        artifact = OnnxBackend(cache_dir=cache).export(student, inputs[:1], tmp_path / "m.onnx", "int8", calibration)
        return artifact.details["scheme"], artifact.details["scheme_choice"]

    cache = tmp_path / "cache"
    assert build(cache) == ("s8s8", "measured")
    scheme, how = build(cache)  # the timings now favour u8s8: unread, the memo answers
    assert scheme == "s8s8" and how.startswith("cached: measured ")
    assert build(None) == ("u8s8", "measured")  # --no-cache: measured afresh (the second reading)
    [entry] = (cache / "onnx_int8_scheme").iterdir()
    entry.write_text("{not json")  # a damaged entry is measured again, never fatal
    assert build(cache) == ("s8s8", "measured")
    entry.write_text('{"scheme": "s8s8", "p50_ms": {"u8s8": "__import__"}, "measured_at": "x"}')
    assert build(cache)[1] == "measured"  # a forged entry (values not timings) is not believed
    (cache / "onnx_int8_scheme").chmod(0o777)  # a folder others can write is refused, as every cache is
    with pytest.raises(EdgekdError, match="can be written by other users"):
        build(cache)
    (cache / "onnx_int8_scheme").chmod(0o700)
    assert OnnxBackend("u8s8", cache_dir=cache).export(
        student, inputs[:1], tmp_path / "f.onnx", "int8", calibration).details["scheme_choice"] == "fixed"


def _int8_weight_limit(path) -> int:
    """The largest |int8| of any quantized weight initializer in a QDQ model."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    fed = [n.input[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    assert fed, "no int8 weights found"
    return max(int(np.abs(weights[name].astype(np.int32)).max()) for name in fed)


def test_onnx_int8_takes_7_bit_weights_where_this_hosts_kernels_deviate_from_the_graph(
        tmp_path, student, inputs, monkeypatch):
    """On x86 without VNNI onnxruntime's u8s8 kernels saturate: the scheme that deviates gives way to its twin."""
    import edgekd.timing
    from edgekd.backends.onnx import MAX_KERNEL_DEVIATION, OnnxBackend
    from edgekd.timing import Interleaved

    def deviation(path, x, threads=1):
        return 10 * MAX_KERNEL_DEVIATION if path.stem.endswith("8") else 0.0  # u8s8/s8s8 saturate, twins don't

    monkeypatch.setattr("edgekd.backends.onnx.kernel_deviation", deviation)
    timed = []
    monkeypatch.setattr(edgekd.timing, "measure_interleaved",
                        lambda paths, *a, **k: timed.append(sorted(paths)) or Interleaved({s: [1.0] for s in paths}))
    calibration = Calibration(inputs[:32], {"data": "test"})
    artifact = OnnxBackend().export(student, inputs[:1], tmp_path / "m.onnx", "int8", calibration)
    assert timed == [["s8s7", "u8s7"]]  # only faithful candidates are timed
    assert artifact.details["scheme"] == "u8s7" and artifact.details["reduce_range"] is True
    assert set(artifact.details["kernel_deviation"]) == {"u8s8", "u8s7", "s8s8", "s8s7"}
    assert _int8_weight_limit(artifact.path) <= 64  # 7-bit weights in the file itself
    parity = check_parity(artifact, predict_logits(student, inputs), inputs)
    assert parity.passed, parity


def test_kernel_deviation_separates_the_graph_from_the_kernels(tmp_path, student, inputs):
    """7-bit weights run exactly as the QDQ graph says on any CPU; a fixed scheme still records its deviation."""
    from edgekd.backends.onnx import MAX_KERNEL_DEVIATION, OnnxBackend, kernel_deviation

    calibration = Calibration(inputs[:32], {"data": "test"})
    artifact = OnnxBackend("s8s7").export(student, inputs[:1], tmp_path / "m.onnx", "int8", calibration)
    assert artifact.details["scheme_choice"] == "fixed" and artifact.details["reduce_range"] is True
    assert artifact.details["kernel_deviation"]["s8s7"] == kernel_deviation(artifact.path, inputs)
    assert kernel_deviation(artifact.path, inputs) <= MAX_KERNEL_DEVIATION
    assert _int8_weight_limit(artifact.path) <= 64
    eight_bit = OnnxBackend("s8s8").export(student, inputs[:1], tmp_path / "e.onnx", "int8", calibration)
    assert _int8_weight_limit(eight_bit.path) > 64


def test_an_x86_target_without_vnni_gets_7_bit_onnx_weights_whatever_the_build_host(tmp_path, student, inputs,
                                                                                    monkeypatch):
    """A VNNI build machine computes u8s8 exactly; the AVX2 device the target names would saturate."""
    import edgekd.timing
    from edgekd.backends.onnx import OnnxBackend
    from edgekd.targets import load_target
    from edgekd.timing import Interleaved

    monkeypatch.setattr("edgekd.backends.onnx.kernel_deviation", lambda *a, **k: 0.0)  # this host: exact
    monkeypatch.setattr(edgekd.timing, "measure_interleaved",
                        lambda paths, *a, **k: Interleaved({s: [1.0] for s in paths}))
    x86, rpi4 = load_target("x86-cpu"), load_target("rpi4")
    assert OnnxBackend.from_target(x86).seven_bit_only and not OnnxBackend.from_target(rpi4).seven_bit_only
    vnni = x86.model_copy(update={"device": x86.device.model_copy(update={"cpu_flags": ["avx2", "avx512_vnni"]})})
    assert not OnnxBackend.from_target(vnni).seven_bit_only
    calibration = Calibration(inputs[:32], {"data": "test"})
    artifact = OnnxBackend.from_target(x86).export(student, inputs[:1], tmp_path / "m.onnx", "int8", calibration)
    assert artifact.details["scheme"] == "u8s7" and artifact.details["seven_bit_for_device"] is True
    assert _int8_weight_limit(artifact.path) <= 64
