"""Android over adb: stand-ins for ``adb`` and TFLite's ``benchmark_model`` that replay what the real tools print.

The "phone" is a directory: the adb stand-in maps the device's /data/local/tmp, /proc and /sys into it, runs
``adb shell`` command lines with sh (so the phone's ``sha256sum -c`` really checks the pushed bytes) and answers
``getprop`` from a file. Each canned output below says which tool version's format it copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from factories import artifact_row, make_report

from edgekd.cli import main
from edgekd.devices import benchmark_model as bm
from edgekd.gate import evaluate_gate
from edgekd.targets import load_target

SERIAL = "R58M12ABCDE"

# adb client messages: platform-tools 35.0.1, packages/modules/adb/client/adb_client.cpp / transport.cpp
# ("adb: device 'X' not found", "adb: no devices/emulators found"); `adb push` prints "N file pushed".
ADB = '''#!{python}
import os, shutil, subprocess, sys
ROOT, SERIALS = {root!r}, {serials!r}
args = sys.argv[1:]
serial = args[1] if args[:1] == ["-s"] else None
args = args[2:] if serial else args
if not SERIALS:
    sys.exit(print("adb: no devices/emulators found", file=sys.stderr) or 1)
if serial not in SERIALS:
    sys.exit(print(f"adb: device '{{serial}}' not found", file=sys.stderr) or 1)
def on_phone(text):
    for d in ("/data/local/tmp", "/proc/", "/sys/"):
        text = text.replace(d, ROOT + d)
    return text
if args[0] == "push":
    shutil.copyfile(args[1], on_phone(args[2]))
    print(f"{{args[1]}}: 1 file pushed, 0 skipped. 38.1 MB/s ({{os.path.getsize(args[1])}} bytes in 0.001s)")
elif args[0] == "shell":
    env = {{**os.environ, "PATH": ROOT + "/bin:" + os.environ["PATH"]}}
    sys.exit(subprocess.run(["sh", "-c", on_phone(" ".join(args[1:]))], env=env).returncode)
else:
    sys.exit(print(f"adb: unknown command {{args[0]}}", file=sys.stderr) or 1)
'''

# Android toolbox `getprop` prints "[key]: [value]" per property (system/core/toolbox/getprop.cpp).
SNAPDRAGON = {"ro.soc.manufacturer": "QTI", "ro.soc.model": "SM7325", "ro.product.model": "SM-A546B",
              "ro.product.manufacturer": "samsung", "ro.build.version.sdk": "34", "ro.build.version.release": "14",
              "ro.product.cpu.abi": "arm64-v8a", "ro.board.platform": "lahaina"}
TENSOR = {**SNAPDRAGON, "ro.soc.manufacturer": "Google", "ro.soc.model": "Tensor G3", "ro.product.model": "Pixel 8",
          "ro.build.version.sdk": "35", "ro.build.version.release": "15"}

# benchmark_model of TF 2.15 / LiteRT 1.0 (tensorflow/lite/tools/benchmark/benchmark_model.cc and
# benchmark_tflite_model.cc): the delegate verdict lines, the "Replacing N out of M node(s)" line of
# tensorflow/lite/core/subgraph.cc, count= lines with p5/median/p95 (tensorflow/core/util/stats_calculator.cc), the
# memory lines, and the op profile table of tensorflow/lite/profiling/profile_summary_formatter.cc.
HEAD = """INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Graph: [{graph}]
INFO: Use NNAPI: [1]
INFO: Loaded model {graph}
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for NNAPI.
"""
DELEGATE = {
    "full": "VERBOSE: Replacing 64 out of 64 node(s) with delegate (TfLiteNnapiDelegate) node, yielding 1 partitions "
            "for the whole graph.\nINFO: Explicitly applied NNAPI delegate, and the model graph will be completely "
            "executed by the delegate.\n",
    "partial": "VERBOSE: Replacing 62 out of 64 node(s) with delegate (TfLiteNnapiDelegate) node, yielding 2 "
               "partitions for the whole graph.\nINFO: Explicitly applied NNAPI delegate, and the model graph will "
               "be partially executed by the delegate w/ 2 delegate kernels.\n",
    "none": "INFO: Though NNAPI delegate is explicitly applied, the model graph will not be executed by the "
            "delegate.\n",
}
TIMING = """INFO: The input model file size (MB): 0.195
INFO: Initialized session in 120.4ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=187 first=4310 curr=2580 min=2490 max=4310 avg=2671.3 std=201

INFO: Running benchmark for at least 200 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=388 first=2601 curr=2577 min=2460 max=3390 avg=2580.2 std=95 p5=2480 median=2566 p95=2770

INFO: Inference timings in us: Init: 120400, First inference: 4310, Warmup (avg): 2671.3, Inference (avg): 2580.2
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=12.5 overall=18.25
INFO: Overall peak memory footprint (MB) via periodic monitoring: 41.3
"""  # noqa: E501
PROFILE_HEAD = ("INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n"
                "============================== Run Order ==============================\n"
                "\t             [node type]\t          [first]\t         [avg ms]\t             [%]\t          [cdf%]"
                "\t          [mem KB]\t      [times called]\t[Name]\n")
PROFILE_ROWS = {
    "full": [("TfLiteNnapiDelegate", "2.410", "[model/conv0;model/dense/MatMul]:64")],
    "partial": [("TfLiteNnapiDelegate", "1.910", "[model/conv0;model/block3/add]:64"),
                ("MEAN", "0.310", "[model/pool/Mean]:40"), ("TfLiteNnapiDelegate", "0.220", "[model/dense]:65"),
                ("SOFTMAX", "0.012", "[model/softmax]:63")],
    "none": [("CONV_2D", "1.200", "[model/conv0]:0"), ("DEPTHWISE_CONV_2D", "0.800", "[model/block1/dw]:1"),
             ("MEAN", "0.310", "[model/pool/Mean]:2"), ("SOFTMAX", "0.012", "[model/softmax]:3")],
}


def canned_output(scenario: str, graph: str = "/data/local/tmp/m.tflite", profile: bool = True,
                  delegate: str = "nnapi") -> str:
    rows = "".join(f"\t{t:>24}\t{ms:>17}\t{ms:>17}\t{'10.000%':>16}\t{'10.000%':>16}\t{'0.000':>17}\t{1:>20}\t{n}\n"
                   for t, ms, n in PROFILE_ROWS[scenario])
    text = HEAD.format(graph=graph) + DELEGATE[scenario] + TIMING + (PROFILE_HEAD + rows + "\n" if profile else "")
    if delegate == "gpu":  # the GPU delegate's own names (a LiteRT run posted with --use_gpu=true: "Created
        # TensorFlow Lite delegate for GPU.", "(TfLiteGpuDelegateV2)", "Explicitly applied GPU delegate, ...")
        for nnapi, gpu in (("Use NNAPI: [1]", "Use gpu: [1]"), ("TfLiteNnapiDelegate", "TfLiteGpuDelegateV2"),
                           ("delegate for NNAPI.", "delegate for GPU."), ("NNAPI delegate", "GPU delegate")):
            text = text.replace(nnapi, gpu)
    return text


TOOL = '''#!{python}
import sys
sys.path.insert(0, {tests!r})
from test_devices_android import canned_output
flags = dict(a.split("=", 1) for a in sys.argv[1:])
open({ran!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
print(canned_output({scenario!r}, flags["--graph"], flags["--enable_op_profiling"] == "true",
                    "gpu" if "--use_gpu" in flags else "nnapi"))
'''


# inference_diff (tensorflow/lite/tools/evaluation/tasks/inference_diff/README.md, TF 2.x): one OutputDiff line per
# output tensor; the reference is single-threaded CPU kernels, the test interpreter has the delegate.
DIFF_TOOL = '''#!/bin/sh
echo "Num evaluation runs: 50"
echo "Reference run latency: avg=84364.2(us), std_dev=12525(us)"
echo "Test run latency: avg=7281.64(us), std_dev=2089(us)"
echo "OutputDiff[0]: avg_error=1.96277e-05, std_dev=6.95767e-06"
echo "$@" >> {ran}
'''


# --------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(("scenario", "status", "cpu"), [("full", "full", {}),
                                                          ("partial", "partial", {"MEAN": 1, "SOFTMAX": 1}),
                                                          ("none", "none", {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1,
                                                                            "MEAN": 1, "SOFTMAX": 1})])
def test_benchmark_model_output_parsed(scenario, status, cpu):
    run = bm.parse_output(canned_output(scenario), "nnapi")
    assert (run.init_ms, run.first_ms, run.avg_ms) == pytest.approx((120.4, 4.31, 2.5802))
    assert (run.timed["median"], run.timed["p95"], run.timed["count"]) == pytest.approx((2.566, 2.77, 388))
    assert (run.memory_overall_mb, run.process_peak_mb) == (18.25, 41.3)
    d = run.delegation
    assert d.status == status and d.cpu_operators == cpu
    if scenario == "partial":
        assert (d.total_nodes, d.delegated_nodes, d.cpu_nodes, d.partitions, d.delegate_kernels) == (64, 62, 2, 2, 2)
        assert d.operators_by_delegate["nnapi"] == {"TfLiteNnapiDelegate": 2}


def test_older_benchmark_model_without_percentiles_and_xnnpack_rows():
    # TF 2.4-2.12 print no p5/median/p95; XNNPACK profiles its own operators as "Delegate/..." (a real run posted
    # in a LiteRT benchmark write-up: "Convolution (NHWC, QC8) GEMM ... Delegate/Convolution (NHWC, QC8) GEMM:2").
    text = canned_output("none").replace(" p5=2480 median=2566 p95=2770", "").replace(
        "\t                 CONV_2D", "\tConvolution (NHWC, QC8) GEMM").replace("[model/conv0]:0",
                                                                             "Delegate/Convolution (NHWC, QC8) GEMM:0")
    run = bm.parse_output(text, "nnapi")
    assert not run.has_percentiles and run.timed["avg"] == pytest.approx(2.5802)
    assert run.delegation.cpu_operators["Convolution (NHWC, QC8) GEMM"] == 1  # XNNPACK runs on the CPU too
    assert run.delegation.operators_by_delegate["xnnpack"] == {"Convolution (NHWC, QC8) GEMM": 1}


@pytest.mark.parametrize(("text", "says"), [
    ("Segmentation fault\n", "no 'Inference timings"),
    (canned_output("full").replace("Init: 120400", "Init: 1e999"), "unusable timing"),
    (canned_output("full").replace("count=388", "cnt=388").replace("count=187", "cnt=187"), "no statistics line"),
    (canned_output("partial").replace("\t[model/softmax]:63", ""), "cannot read"),
    (canned_output("full").replace("[node type]", "[kind]"), "table header"),
    ("x" * (bm.MAX_OUTPUT_CHARS + 1), "characters"),
])
def test_garbled_or_hostile_output_is_a_clear_error(text, says):
    with pytest.raises(bm.BenchmarkOutputError, match=says):
        bm.parse_output(text, "nnapi")


# --------------------------------------------------------------------------------------------- end to end
def device_run_dir(tmp_path: Path, target: Path | str, name: str, fmt: str, data: bytes,
                   precision: str = "int8") -> Path:
    """A run directory shipping one artifact ``name`` (``data``), as `edgekd build` lays it out."""
    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_bytes(data)
    np.savez(run / "eval.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64))
    sha = hashlib.sha256(data).hexdigest()
    eval_sha = hashlib.sha256((run / "eval.npz").read_bytes()).hexdigest()
    profile = load_target(target)
    report = make_report(target=profile.name, target_path=str(profile.path),
                         eval_inputs={"path": "eval.npz", "sha256": eval_sha, "samples": 400},
                         artifacts=[artifact_row(name, fmt, precision, sha256=sha, accuracy=0.985)])
    report["gate"] = evaluate_gate(report, profile).to_dict()
    entry = {"path": name, "role": "student", "format": fmt, "precision": precision, "runtime": fmt, "sha256": sha,
             "size_bytes": len(data), "files": [{"path": name, "sha256": sha}]}
    manifest = {"edgekd_version": "0.1.0", "target": profile.name, "input": {"shape": [1, 1, 8, 8]}, "output": {},
                "normalization": {}, "classes": ["0", "1"], "calibration": {},
                "eval_inputs": {"path": "eval.npz", "sha256": eval_sha}, "artifacts": [entry]}
    (run / "report.json").write_text(json.dumps(report))
    (run / "manifest.json").write_text(json.dumps(manifest))
    return run


def _run_dir(tmp_path: Path) -> Path:
    """Ships one int8 TFLite artifact (its bytes: the stand-in tool never parses them)."""
    return device_run_dir(tmp_path, "android-nnapi", "model_int8.tflite", "tflite", os.urandom(4096))


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def phone(tmp_path, monkeypatch):
    """Install the adb stand-in on PATH; returns a function that sets the phone up for one scenario."""
    root, bin_dir = tmp_path / "phone", tmp_path / "host-bin"
    for d in ("data/local/tmp", "proc", "sys/devices/system/cpu", "bin"):
        (root / d).mkdir(parents=True)
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (root / "proc/meminfo").write_text("MemTotal:        7741020 kB\nMemFree:          812332 kB\n")
    (root / "sys/devices/system/cpu/possible").write_text("0-7\n")

    def setup(scenario: str = "full", props: dict | None = None, serials: tuple = (SERIAL,)) -> Path:
        _executable(bin_dir / "adb", ADB.format(python=sys.executable, root=str(root), serials=list(serials)))
        lines = "".join(f"[{k}]: [{v}]\n" for k, v in (props or SNAPDRAGON).items())
        _executable(root / "bin/getprop", f"#!/bin/sh\ncat <<'EOF'\n{lines}EOF\n")
        return _executable(tmp_path / "benchmark_model", TOOL.format(
            python=sys.executable, tests=str(Path(__file__).parent), ran=str(tmp_path / "tool-runs.txt"),
            scenario=scenario))

    setup.root, setup.runs = root, tmp_path / "tool-runs.txt"
    return setup


def _bench(run: Path, tool: Path, serial: str = SERIAL) -> int:
    return main(["bench", str(run), "--adb", serial, "--benchmark-tool", str(tool), "--runs", "50"])


def test_adb_full_delegation_fills_device_results_and_verifies_the_budgets(phone, tmp_path, capsys):
    run = _run_dir(tmp_path)
    tool = phone("full")
    assert _bench(run, tool) == 0, capsys.readouterr().err
    report = json.loads((run / "report.json").read_text())
    [entry] = report["device_results"]
    [row] = entry["artifacts"]
    assert entry["remote"] == f"adb:{SERIAL}" and entry["measured_on"]["is_target_device"] is True
    assert entry["measured_on"]["cpu"] == "QTI SM7325" and entry["measured_on"]["board"] == "SM-A546B"
    assert (entry["measured_on"]["cores"], entry["measured_on"]["memory_mb"]) == (8, 7559)
    assert (row["latency_ms"]["p50"], row["latency_ms"]["p95"]) == pytest.approx((2.566, 2.77))
    assert row["latency_ms_detail"]["blocks"] == 3 and row["peak_memory_mb"] == 18.25
    assert row["delegation"]["status"] == "full" and row["sha256_verified"] is True
    checks = {c["name"]: c for c in report["gate"]["checks"]}
    assert checks["latency_ms_p95"]["status"] == "pass" and "adb:R58M12ABCDE is the target device" in \
        checks["latency_ms_p95"]["note"]
    assert checks["full_delegation"]["status"] == "pass" and report["gate"]["passed"]
    runs = phone.runs.read_text().splitlines()
    assert len(runs) == 4 and all("--use_nnapi=true" in r and "--num_threads=4" in r for r in runs)
    assert list((phone.root / "data/local/tmp").iterdir()) == []  # the work directory is removed
    assert "target device" in (run / "report.md").read_text()


def test_a_gpu_delegate_target_runs_with_use_gpu_and_counts_as_the_device(phone, tmp_path, capsys):
    """NNAPI is deprecated from Android 15: a profile names the GPU delegate instead."""
    raw = yaml.safe_load(open(load_target("android-nnapi").path, encoding="utf-8"))
    raw["runtime"]["delegate"] = "gpu"
    target = tmp_path / "phone-gpu.yaml"
    target.write_text(yaml.safe_dump(raw))
    run = device_run_dir(tmp_path, target, "model_int8.tflite", "tflite", os.urandom(4096))
    assert _bench(run, phone("partial")) == 0, capsys.readouterr().err
    assert all("--use_gpu=true" in r for r in phone.runs.read_text().splitlines())
    report = json.loads((run / "report.json").read_text())
    entry = report["device_results"][0]
    assert entry["measured_on"]["is_target_device"] is True and entry["measured_on"]["delegate"] == "gpu"
    delegation = entry["artifacts"][0]["delegation"]
    assert delegation["delegate"] == "gpu" and delegation["status"] == "partial"
    assert delegation["operators_by_delegate"]["gpu"] == {"TfLiteGpuDelegateV2": 2}
    assert "gpu partial" in " ".join(report["gate"]["violations"])


def test_inference_diff_compares_the_delegate_with_the_cpu_on_the_phone(phone, tmp_path, capsys):
    run = _run_dir(tmp_path)
    diff = _executable(tmp_path / "inference_diff", DIFF_TOOL.format(ran=tmp_path / "diff-runs.txt"))
    assert main(["bench", str(run), "--adb", SERIAL, "--benchmark-tool", str(phone("full")), "--inference-diff",
                 str(diff), "--runs", "50"]) == 0, capsys.readouterr().err
    row = json.loads((run / "report.json").read_text())["device_results"][0]["artifacts"][0]
    assert row["delegate_vs_cpu"]["output_diff"] == [{"output": 0, "avg_error": 1.96277e-05, "std_dev": 6.95767e-06}]
    assert row["delegate_vs_cpu"]["latency"]["test"] == {"avg_us": 7281.64, "std_dev_us": 2089.0}
    assert "inference_diff compared the delegate's outputs" in row["accuracy_source"]
    assert "--delegate=nnapi" in (tmp_path / "diff-runs.txt").read_text()
    assert "outputs vs the CPU on the device: mean abs. difference up to 1.96e-05" in (run / "report.md").read_text()


@pytest.mark.parametrize(("extra", "says"), [(["--benchmark-tool", "/data/local/tmp/bm"], "go with --adb SERIAL"),
                                             (["--runtime", "tensorrt"], "needs the device: --remote"),
                                             (["--adb", SERIAL, "--remote", "pi@h"], "cannot be combined"),
                                             (["--adb", SERIAL, "--benchmark-tool", "rel/missing"], "neither a file")])
def test_device_tool_flags_that_do_not_go_together(tmp_path, capsys, extra, says):
    run = _run_dir(tmp_path)
    assert main(["bench", str(run), *extra]) == 2
    assert says in capsys.readouterr().err


def test_partial_delegation_fails_the_gate_naming_the_cpu_operators(phone, tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert _bench(run, phone("partial")) == 0
    capsys.readouterr()
    assert main(["gate", str(run / "report.json"), "--target", "android-nnapi"]) == 1
    out = capsys.readouterr().out
    assert "full_delegation" in out and "FAIL" in out
    violation = json.loads((run / "report.json").read_text())["gate"]["violations"]
    assert any("MEAN (x1), SOFTMAX (x1)" in v and "nnapi partial: 62 of 64 nodes in 2 partition(s)" in v
               for v in violation)
    assert "MEAN (x1), SOFTMAX (x1)" in (run / "report.md").read_text()
    html = (run / "report.html").read_text()
    assert "TfLiteNnapiDelegate" in html and "SOFTMAX" in html


def test_no_delegation_on_a_phone_that_is_not_the_target_stays_unverified(phone, tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert _bench(run, phone("none", props=TENSOR)) == 0
    err = capsys.readouterr().err
    assert "NNAPI is deprecated from Android 15" in err
    report = json.loads((run / "report.json").read_text())
    entry = report["device_results"][0]
    assert entry["measured_on"]["is_target_device"] is False and entry["measured_on"]["identity"]["rule"] == "mismatch"
    assert "'Google Tensor G3' / 'Pixel 8' does not match" in " ".join(entry["measured_on"]["identity"]["reasons"])
    assert entry["artifacts"][0]["delegation"]["status"] == "none"
    assert set(report["gate"]["unverified"]) == {"latency_ms_p95", "peak_memory_mb"}


@pytest.mark.parametrize(("serials", "says"), [((), "no Android device 'R58M12ABCDE'"),
                                               (("emulator-5554",), "no Android device 'R58M12ABCDE'")])
def test_a_device_that_is_not_there_is_one_clear_message(phone, tmp_path, capsys, serials, says):
    run = _run_dir(tmp_path)
    before = (run / "report.json").read_bytes()
    assert _bench(run, phone("full", serials=serials)) == 2
    err = capsys.readouterr().err
    assert says in err and "adb devices" in err and "Traceback" not in err
    assert (run / "report.json").read_bytes() == before


def test_an_artifact_changed_since_the_build_never_runs_on_the_phone(phone, tmp_path, capsys):
    run = _run_dir(tmp_path)
    tool = phone("full")
    (run / "model_int8.tflite").write_bytes(os.urandom(4096))  # same name, other bytes than the manifest's
    assert _bench(run, tool) == 2
    assert "does not have the sha256 the build recorded" in capsys.readouterr().err
    assert not phone.runs.exists()


@pytest.mark.parametrize("serial", ["-s", "R58M;rm -rf /", "a b", ""])
def test_serials_that_could_inject_are_refused(tmp_path, capsys, serial):
    run = _run_dir(tmp_path)
    assert main(["bench", str(run), f"--adb={serial}"]) == 2
    assert "is not a device serial" in capsys.readouterr().err
