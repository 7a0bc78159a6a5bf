"""Jetson through TensorRT: a ``trtexec`` stand-in that replays what the real tool prints and writes, run over a
throwaway sshd on loopback (``test_bench``'s fixture) that plays the Jetson. Each canned output says which
TensorRT version's format it copies."""

from __future__ import annotations

import json
import math
import re
import stat
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import yaml
from onnx import TensorProto, helper
from test_bench import _remote_work_dirs, sshd  # noqa: F401 - the fixture
from test_devices_android import device_run_dir

from edgekd.cli import main
from edgekd.devices import trtexec
from edgekd.devices.tensorrt import DESCRIBE, parse_description
from edgekd.targets import load_target

# trtexec of TensorRT 8.6 (samples/common/sampleReporting.cpp printPerformanceReport, sampleEngines.cpp,
# trtexec.cpp's "&&&& PASSED/FAILED TensorRT.trtexec [TensorRT v8602]" banner; MemUsageChange lines of the builder).
LOG_OK = """&&&& RUNNING TensorRT.trtexec [TensorRT v8602] # {cmd}
[12/07/2026-10:01:02] [I] TensorRT version: 8.6.2
[12/07/2026-10:01:03] [I] [TRT] [MemUsageChange] Init CUDA: CPU +2, GPU +0, now: CPU 31, GPU 3920 (MiB)
[12/07/2026-10:01:15] [I] [TRT] [MemUsageChange] TensorRT-managed allocation in building engine: CPU +0, GPU +4, now: CPU 0, GPU 4 (MiB)
[12/07/2026-10:01:15] [I] Engine built in 12.3 sec.
[12/07/2026-10:01:15] [I] [TRT] [MemUsageChange] TensorRT-managed allocation in engine deserialization: CPU +0, GPU +1, now: CPU 0, GPU 1 (MiB)
[12/07/2026-10:01:15] [I] [TRT] [MemUsageChange] TensorRT-managed allocation in IExecutionContext creation: CPU +0, GPU +2, now: CPU 0, GPU 3 (MiB)
[12/07/2026-10:01:18] [I] === Performance summary ===
[12/07/2026-10:01:18] [I] Throughput: 2475.3 qps
[12/07/2026-10:01:18] [I] Latency: min = 0.377 ms, max = 0.912 ms, mean = 0.404 ms, median = 0.398 ms, percentile(90%) = 0.41 ms, percentile(95%) = 0.43 ms, percentile(99%) = 0.61 ms
[12/07/2026-10:01:18] [I] Total Host Walltime: 3.00101 s
&&&& PASSED TensorRT.trtexec [TensorRT v8602] # {cmd}
"""  # noqa: E501
# What TensorRT 8.6's parser and builder print for a graph they cannot build (sampleEngines.cpp: "Engine could not be
# created from network", trtexec.cpp: "Engine set up failed").
LOG_FAILED = """&&&& RUNNING TensorRT.trtexec [TensorRT v8602] # {cmd}
[12/07/2026-10:01:02] [I] TensorRT version: 8.6.2
[12/07/2026-10:01:09] [E] Error[4]: [network.cpp::validate::3062] Error Code 4: Internal Error (input: dynamic input is missing dimensions in profile 0.)
[12/07/2026-10:01:09] [E] Engine could not be created from network
[12/07/2026-10:01:09] [E] Building engine failed
[12/07/2026-10:01:09] [E] Failed to create engine from model or file.
[12/07/2026-10:01:09] [E] Engine set up failed
&&&& FAILED TensorRT.trtexec [TensorRT v8602] # {cmd}
"""  # noqa: E501
# --exportLayerInfo of TensorRT 8.6 with --profilingVerbosity=detailed (IEngineInspector JSON): the convolution runs
# in int8; the classifier's Gemm fell back to fp32 (a layer TensorRT found no int8 tactic for).
INT8, FP32 = "Four wide channel vectorized row major Int8 format", "Row major linear FP32"
LAYERS = {"Layers": [
    {"Name": "/conv/Conv + /relu/Relu", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "input", "Location": "Device", "Dimensions": [1, 1, 8, 8], "Format/Datatype": INT8}],
     "Outputs": [{"Name": "/relu/Relu_output_0", "Location": "Device", "Dimensions": [1, 8, 8, 8],
                  "Format/Datatype": INT8}],
     "ParameterType": "Convolution", "TacticValue": "0x1f3c2b"},
    {"Name": "Reformatting CopyNode for Input Tensor 0 to /fc/Gemm", "LayerType": "Reformat",
     "Inputs": [{"Name": "/relu/Relu_output_0", "Format/Datatype": INT8}],
     "Outputs": [{"Name": "x", "Format/Datatype": FP32}]},
    {"Name": "/fc/Gemm", "LayerType": "CaskGemmConvolution",
     "Inputs": [{"Name": "x", "Location": "Device", "Dimensions": [1, 512, 1, 1], "Format/Datatype": FP32}],
     "Outputs": [{"Name": "logits", "Location": "Device", "Dimensions": [1, 4], "Format/Datatype": FP32}],
     "ParameterType": "Convolution"},
], "Bindings": ["input", "logits"]}
# --exportTimes of TensorRT 8.6 (sampleReporting.cpp exportJSONTrace): one record per timed inference.
TIME_KEYS = ("startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs", "startD2hMs",
             "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs", "endToEndMs")

TOOL = '''#!{python}
import json, shlex, sys
sys.path.insert(0, {tests!r})
from test_devices_tensorrt import LAYERS, LOG_FAILED, LOG_OK, TIME_KEYS
flags = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
cmd = shlex.join(["trtexec", *sys.argv[1:]])
open({ran!r}, "a").write(cmd + "\\n")
if {scenario!r} == "build-fails":
    print(LOG_FAILED.format(cmd=cmd)); sys.exit(1)
if {scenario!r} == "garbage":  # a hostile or broken device: bytes that are not UTF-8, no verdict line
    sys.stdout.buffer.write(bytes(range(256)) * 4); sys.exit(0)
latencies = [0.40 + 0.01 * (i % 7) + (0.5 if i % 50 == 49 else 0.0) for i in range(int(flags["--iterations"]))]
records = [dict(zip(TIME_KEYS, [i * 0.5, i * 0.5 + 0.02, 0, 0, 0, 0, 0, 0, 0.01, lat - 0.02, 0.01, lat, lat]))
           for i, lat in enumerate(latencies)]
json.dump(records, open(flags["--exportTimes"], "w"))
json.dump(LAYERS, open(flags["--exportLayerInfo"], "w"))
open(flags["--saveEngine"], "wb").write(b"engine")
print(LOG_OK.format(cmd=cmd))
'''


def tiny_onnx() -> bytes:
    """input [batch, 1, 8, 8] -> Flatten -> Gemm -> logits [batch, 4]: a real ONNX graph for --shapes."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [64, 4], [0.01] * 256)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["x"]), helper.make_node("Gemm", ["x", "w"], ["logits"])], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def this_machine_as_jetson(tmp_path: Path) -> Path:
    """The Jetson profile, its identity made this machine's (the loopback "device"), shipping int8."""
    me = parse_description(subprocess.run(["sh", "-c", DESCRIBE], capture_output=True, text=True).stdout)
    raw = yaml.safe_load(open(load_target("jetson-orin-nano").path, encoding="utf-8"))
    raw["name"] = "test-jetson"
    raw["device"].update(arch=me["arch"], cores=me["cores"], memory_mb=me["memory_mb"], cpu_pattern=".")
    raw["runtime"]["precision"] = "int8"
    raw["budgets"].update(latency_ms_p95=1000.0, peak_memory_mb=4096.0, model_size_kb=4096.0)
    path = tmp_path / "test-jetson.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _tool(tmp_path: Path, scenario: str) -> Path:
    tool = tmp_path / "trtexec"
    tool.write_text(TOOL.format(python=sys.executable, tests=str(Path(__file__).parent),
                                ran=str(tmp_path / "trtexec-runs.txt"), scenario=scenario))
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


def _args(run: Path, sshd: dict, tool: Path) -> list[str]:  # noqa: F811
    args = ["bench", str(run), "--remote", f"{sshd['user']}@127.0.0.1:{sshd['port']}", "--runtime", "tensorrt",
            "--benchmark-tool", str(tool), "--identity", str(sshd["dir"] / "user_key"), "--runs", "200"]
    return args + [x for o in sshd["options"] for x in ("--ssh-option", o)]


# --------------------------------------------------------------------------------------------- parsing
def test_trtexec_log_times_and_layers_parsed():
    log = trtexec.parse_log(LOG_OK.format(cmd="trtexec --onnx=m.onnx"))
    assert log.passed and log.version == "8.6.2" and log.build_s == 12.3
    assert log.device_memory_mb == 3.0  # engine + context; the builder's own 4 MiB left out
    assert log.summary["percentile(95%)"] == 0.43
    failed = trtexec.parse_log(LOG_FAILED.format(cmd="trtexec"))
    assert not failed.passed and "Engine could not be created from network" in failed.errors
    layers = trtexec.parse_layers(json.dumps(LAYERS), "int8")
    assert [la.precision for la in layers.layers] == ["int8", "int8", "fp32"]
    assert layers.float_layers == ["/fc/Gemm"] and layers.counts == {"fp32": 1, "int8": 2}
    assert trtexec.parse_layers(json.dumps(LAYERS), "fp16").float_layers == ["/fc/Gemm"]
    assert trtexec.parse_times(json.dumps([{"latencyMs": 0.4}, {"latencyMs": 0.5}])) == [0.4, 0.5]
    assert trtexec._version_from_int("100300") == "10.3.0"


@pytest.mark.parametrize(("parse", "text", "says"), [
    (trtexec.parse_times, "{not json", "not JSON"),
    (trtexec.parse_times, "[]", "non-empty list"),
    (trtexec.parse_times, json.dumps([{"computeMs": 1}]), "no 'latencyMs'"),
    (trtexec.parse_times, '[{"latencyMs": NaN}]', "unusable latencyMs"),
    (trtexec.parse_times, '[{"latencyMs": -1}]', "unusable latencyMs"),
    (trtexec.parse_times, "[" * 100_000 + "]" * 100_000, "not JSON"),
    (lambda t: trtexec.parse_layers(t, "int8"), json.dumps({"Bindings": []}), "no 'Layers'"),
    (lambda t: trtexec.parse_layers(t, "int8"), json.dumps({"Layers": [{"LayerType": "x"}]}), "no 'Name'"),
])
def test_garbled_or_hostile_trtexec_files_are_clear_errors(parse, text, says):
    with pytest.raises(trtexec.TrtexecOutputError, match=says):
        parse(text)


# --------------------------------------------------------------------------------------------- over ssh
def test_a_file_changed_since_the_build_is_refused_before_it_is_read(tmp_path, capsys):
    run = device_run_dir(tmp_path, this_machine_as_jetson(tmp_path), "model_int8.onnx", "onnx", tiny_onnx())
    (run / "model_int8.onnx").write_bytes(b"\x08\x07 not the build's graph")
    assert main(["bench", str(run), "--remote", "nobody@127.0.0.1:9", "--runtime", "tensorrt"]) == 2
    assert "is not the file the build hashed" in capsys.readouterr().err


def test_tensorrt_over_ssh_records_latency_and_layer_precisions(sshd, tmp_path, capsys):  # noqa: F811
    run = device_run_dir(tmp_path, this_machine_as_jetson(tmp_path), "model_int8.onnx", "onnx", tiny_onnx())
    before = _remote_work_dirs()
    assert main(_args(run, sshd, _tool(tmp_path, "int8-float-layer"))) == 0, capsys.readouterr().err
    ran = (tmp_path / "trtexec-runs.txt").read_text()
    assert "--shapes=input:1x1x8x8" in ran and "--int8" in ran and "--onnx=model_int8.onnx" in ran
    report = json.loads((run / "report.json").read_text())
    [entry] = report["device_results"]
    [row] = entry["artifacts"]
    assert entry["measured_on"]["is_target_device"] is True and entry["measured_on"]["delegate"] == "tensorrt"
    assert row["runtime"] == "tensorrt" and row["runtime_version"] == "8.6.2" and row["engine_build_s"] == 12.3
    assert row["latency_ms_detail"]["runs"] == 200 and row["latency_ms"]["p50"] == pytest.approx(0.43)
    assert row["latency_ms"]["p99"] > 0.9 and row["peak_memory_mb"] == 3.0 and math.isfinite(row["noise_pct"])
    assert row["layer_precisions"]["float_layers"] == ["/fc/Gemm"]
    check = next(c for c in report["gate"]["checks"] if c["name"] == "full_delegation")
    assert check["status"] == "fail" and "/fc/Gemm" in check["note"] and not report["gate"]["passed"]
    md = (run / "report.md").read_text()
    assert "int8 engine: 1 fp32, 2 int8 layers; left in float: /fc/Gemm" in md
    assert "left in float" in (run / "report.html").read_text()
    assert _remote_work_dirs() == before  # the device's work directory is removed


@pytest.mark.parametrize(("scenario", "says"), [("build-fails", "Engine could not be created from network"),
                                                ("garbage", "(no output)|\ufffd")])
def test_a_failed_engine_build_is_the_devices_clear_error(sshd, tmp_path, capsys, scenario, says):  # noqa: F811
    run = device_run_dir(tmp_path, this_machine_as_jetson(tmp_path), "model_int8.onnx", "onnx", tiny_onnx())
    before = (run / "report.json").read_bytes()
    assert main(_args(run, sshd, _tool(tmp_path, scenario))) == 2
    err = capsys.readouterr().err
    assert "trtexec could not build or run the engine for model_int8.onnx" in err
    assert re.search(says, err) and "Traceback" not in err and "internal error" not in err
    assert (run / "report.json").read_bytes() == before
    assert onnx.load_from_string((run / "model_int8.onnx").read_bytes()).graph.input[0].name == "input"


# --------------------------------------------------------------------------------------------- the engine's source
def test_a_tensorrt_target_ships_symmetric_int8_qdq_with_per_channel_weights(tmp_path):
    """TensorRT's explicit quantization wants every zero point 0 and per-channel weight scales; onnxruntime's
    default s8s8 (asymmetric activations) would leave TensorRT layers it cannot take in int8."""
    import numpy as np
    from onnx import numpy_helper

    from edgekd.backends import Calibration
    from edgekd.backends.onnx import TENSORRT_SCHEME, OnnxBackend, quantize_onnx_int8

    assert OnnxBackend.from_target(load_target("jetson-orin-nano")).int8_scheme == TENSORRT_SCHEME
    assert OnnxBackend.from_target(load_target("x86-cpu")).int8_scheme == "auto"
    fp32 = tmp_path / "fp32.onnx"
    fp32.write_bytes(tiny_onnx())
    x = np.random.default_rng(0).uniform(0.0, 3.0, (16, 1, 8, 8)).astype(np.float32)  # one-sided: asymmetric zp != 0

    def zero_points_and_weight_scale(scheme: str) -> tuple[set[int], int]:
        model = onnx.load(str(quantize_onnx_int8(fp32, tmp_path / f"{scheme}.onnx", Calibration(x, {}), scheme)))
        init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        zps = {int(v) for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
               for v in np.ravel(init.get(n.input[2], 0)) if len(n.input) > 2}
        weight_dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and "w" in n.input[0])
        return zps, init[weight_dq.input[1]].size

    symmetric, per_channel = zero_points_and_weight_scale(TENSORRT_SCHEME)
    assert symmetric == {0} and per_channel == 4
    assert zero_points_and_weight_scale("s8s8")[0] != {0}


@pytest.mark.parametrize(("extra", "says"), [
    (["--remote=-oProxyCommand=touch /tmp/pwned"], "is not USER@HOST"),
    (["--remote", "nv@jetson", "--benchmark-tool=-oProxyCommand=x"], "is not a path"),
    (["--remote", "nv@jetson", "--benchmark-tool", "/usr/bin/trtexec\nrm -rf ~"], "is not a path"),
    (["--remote", "nv@jetson", "--ssh-option=-F/tmp/evil"], "not an ssh option"),
])
def test_hostile_tensorrt_arguments_never_reach_ssh(tmp_path, monkeypatch, capsys, extra, says):
    import edgekd.devices.tensorrt as trt

    calls = []
    monkeypatch.setattr(trt, "_run", lambda *a, **k: calls.append(a))
    run = device_run_dir(tmp_path, this_machine_as_jetson(tmp_path), "model_int8.onnx", "onnx", tiny_onnx())
    assert main(["bench", str(run), "--runtime", "tensorrt", *extra]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and calls == []
