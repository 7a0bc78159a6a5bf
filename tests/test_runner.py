"""runner.py: the one file that goes to a device. Only stdlib + numpy + the runtime, Python 3.9, honest numbers.

The slow test proves the "only" part: it runs runner.py in virtual environments that hold nothing but numpy and
one runtime (no torch, no edgekd), one of them with numpy 1.26. The environments are cached under
``.ci-cache/runner-venvs/`` (git-ignored; override with EDGEKD_RUNNER_VENVS) keyed by Python and package versions.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_bundle import make_run_dir

from edgekd import runner

RUNNER = Path(runner.__file__)
REPO = RUNNER.parents[1]
VENV_CACHE = Path(os.environ.get("EDGEKD_RUNNER_VENVS", REPO / ".ci-cache" / "runner-venvs"))
# (name, pip requirements, format it runs): both numpy majors, each runtime.
DEVICE_VENVS = [
    ("onnx-numpy1", ["numpy==1.26.4", "onnxruntime==1.32.0"], "onnx"),
    ("openvino-numpy2", ["numpy==2.4.6", "openvino==2026.4.1"], "openvino"),
    ("tflite-numpy1", ["numpy==1.26.4", "ai-edge-litert==2.3.0"], "tflite"),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.getbasetemp())


def run_runner(*args: str, python: str = sys.executable, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([python, str(RUNNER), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


# --------------------------------------------------------------------------------------------- fast
def test_python39_syntax_and_only_allowed_imports():
    source = RUNNER.read_text()
    tree = ast.parse(source, feature_version=(3, 9))  # a 3.10+ construct (match, X | Y at runtime...) fails here
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "openvino", "ai_edge_litert", "tflite_runtime"}
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= allowed, imported - allowed
    assert "torch" not in imported and "edgekd" not in imported


def test_measures_honestly(run_dir):
    proc = run_runner(str(run_dir / "model_fp32.onnx"), "--inputs", str(run_dir / "eval.npz"), "--runs", "30",
                      "--warmup", "4", "--blocks", "3", "--min-time", "0.05", "--no-memory")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    lat = r["latency_ms"]
    assert lat["runs"] >= 30 and lat["runs"] % 3 == 0 and len(lat["samples_ms"]) == lat["runs"]
    assert len(lat["block_medians"]) == 3 and lat["noise_pct"] >= 0
    assert lat["warmup"] >= 4 and sum(lat["samples_ms"]) >= 0.05 * 1000 * 0.5 or lat["runs"] >= runner.MAX_RUNS
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert r["sha256_verified"] and r["runtime"]["name"] == "onnxruntime" and r["torch_imported"] is False
    assert r["accuracy"] == pytest.approx(34 / 40) and r["agreement_with_teacher"] == pytest.approx(36 / 40)
    assert r["parity"]["max_abs_diff"] < 1e-4
    assert set(r["per_class_accuracy"]) <= {"0", "1", "2", "3"} and len(r["predictions"]) == 40
    assert r["machine"]["arch"] and r["machine"]["cores"] >= 1 and r["load_ms"] > 0


class _BusySession:
    """A fake model that takes ``ms`` x the machine's current slowness, which grows with every call (a host that
    throttles or fills up over the run): what two separate runs minutes apart see."""

    calls = 0

    def __init__(self, ms: float):
        self.ms = ms

    def run(self, x):
        _BusySession.calls += 1
        end = time.perf_counter_ns() + self.ms * 1e6 * (1 + _BusySession.calls / 400)
        while time.perf_counter_ns() < end:
            pass
        return x


def test_versus_timing_is_interleaved_so_a_drifting_machine_cancels_out():
    x = np.zeros((4, 3), np.float32)
    fast, slow = _BusySession(0.05), _BusySession(0.1)
    separate = {}
    for session in (slow, fast):  # as two separate runs would: all of one, then all of the other
        stats, _ = runner.measure_latency(session, x, runs=400, warmup=0, blocks=1, min_time_s=0)
        separate[session] = stats["p50"]
    assert separate[fast] / separate[slow] > 0.75  # the drift hid most of the 2x difference
    _BusySession.calls = 0
    paired = runner.compare_latency(fast, slow, x, pairs=10, runs=400, min_time_s=0)
    assert 0.4 < paired["ratio"] < 0.6 and len(paired["ratios"]) == 10 and paired["runs_per_block"] == 40
    assert "interleaved" in paired["how"]


def test_versus_flag_times_against_a_verified_teacher(run_dir, tmp_path):
    args = [str(run_dir / "model_fp32.onnx"), "--inputs", str(run_dir / "eval.npz"), "--runs", "20", "--min-time",
            "0.05", "--no-memory"]
    proc = run_runner(*args, "--versus", str(run_dir / "model_fp32.xml"))
    assert proc.returncode == 0, proc.stderr
    versus = json.loads(proc.stdout)["versus"]
    assert versus["artifact"] == "model_fp32.xml" and versus["format"] == "openvino" and versus["sha256_verified"]
    assert versus["pairs"] == runner.DEFAULT_PAIRS and versus["ratio"] > 0 and versus["versus_p50_ms"] > 0
    stray = tmp_path / "teacher.onnx"  # not in any manifest: never run unverified
    shutil.copy(run_dir / "model_fp32.onnx", stray)
    proc = run_runner(*args, "--versus", str(stray))
    assert proc.returncode == 2 and "no manifest.json beside" in proc.stderr and "Traceback" not in proc.stderr


def test_processes_repeat_the_timing_in_fresh_processes_who_goes_first_alternating(run_dir):
    args = [str(run_dir / "model_fp32.onnx"), "--inputs", str(run_dir / "eval.npz"), "--runs", "20", "--min-time",
            "0.02", "--no-memory", "--processes", "3"]
    proc = run_runner(*args, "--versus", str(run_dir / "model_fp32.xml"))
    assert proc.returncode == 0, proc.stderr
    versus = json.loads(proc.stdout)["versus"]
    assert [p["first"] for p in versus["processes"]] == ["artifact", "versus", "artifact"]
    assert versus["sha256_verified"] and versus["pairs"] == 3 * runner.DEFAULT_PAIRS == len(versus["ratios"])
    assert all(len(p["samples_ms"]) == len(p["versus_samples_ms"]) > 0 for p in versus["processes"])
    assert "in 3 fresh processes" in versus["how"]
    proc = run_runner(*args, "--versus", str(run_dir / "model_fp32.onnx"))  # itself: still two sessions, two timings
    assert proc.returncode == 0, proc.stderr
    assert all(p["samples_ms"] != p["versus_samples_ms"] for p in json.loads(proc.stdout)["versus"]["processes"])
    proc = run_runner(*args)
    assert proc.returncode == 0, proc.stderr
    processes = json.loads(proc.stdout)["latency_ms"]["processes"]
    assert len(processes) == 3 and all(0 < p["p5"] <= p["p50"] <= p["p95"] for p in processes)
    proc = run_runner(*args[:-1], "65")
    assert proc.returncode == 2 and "--processes 65 is more than the 64" in proc.stderr


def test_compare_latency_can_start_with_either_model():
    x = np.zeros((2, 3), np.float32)
    order = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def run(self, sample):
            order.append(self.name)

    a, b = Recorder("a"), Recorder("b")
    runner.compare_latency(a, b, x, pairs=2, runs=2, min_time_s=0, versus_first=True)
    assert order[:40] == ["b"] * 20 + ["a"] * 20  # warm-up: 20 runs each, the first model first
    assert order[40:] == ["b", "a", "a", "b"]


def _write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_bad_inputs_get_one_clear_message(run_dir, tmp_path):
    model = str(run_dir / "model_fp32.onnx")
    good = np.load(run_dir / "eval.npz")
    x, y = good["x"], good["y"]
    cases = [
        (dict(x=x.astype(np.float64), y=y), "must be float32"),
        (dict(x=(x * 10).astype(np.uint8), y=y), "normalise them"),
        (dict(x=x[:, :, :4, :4].copy(), y=y), "sample shape [1, 4, 4] but the model expects [1, 8, 8]"),
        (dict(x=x, y=y[:5]), "labels 'y' must be 40 integers"),
        (dict(x=x, y=y, teacher_logits=np.zeros((40, 7), np.float32)), "has 4 outputs but 'teacher_logits'"),
        (dict(x=x, y=y + 10), "labels 'y' range over"),
        (dict(y=y), "lack the array 'x'"),
    ]
    for i, (arrays, message) in enumerate(cases):
        proc = run_runner(model, "--inputs", str(_write_npz(tmp_path / f"in{i}.npz", **arrays)), "--no-memory")
        assert proc.returncode == 2, (message, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = run_runner(model, "--inputs", str(tmp_path / "missing.npz"))
    assert proc.returncode == 2 and "inputs file not found" in proc.stderr


def test_refuses_a_corrupted_artifact_and_names_missing_runtimes(run_dir, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    data = bytearray((copy / "model_fp32.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model_fp32.onnx").write_bytes(bytes(data))
    proc = run_runner(str(copy / "model_fp32.onnx"), "--inputs", str(copy / "eval.npz"))
    assert proc.returncode == 2 and "sha256 mismatch" in proc.stderr and "refusing to run" in proc.stderr
    (copy / "model_fp32.bin").unlink()
    proc = run_runner(str(copy / "model_fp32.xml"), "--inputs", str(copy / "eval.npz"))
    assert proc.returncode == 2 and "model_fp32.bin is missing" in proc.stderr

    # Several artifacts: each failure is reported, the others still measured, exit 2.
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    out = tmp_path / "r.json"
    code = runner.main([str(run_dir / "model_fp32.xml"), str(run_dir / "model_fp32.onnx"), "--inputs",
                        str(run_dir / "eval.npz"), "--runs", "5", "--min-time", "0", "--no-memory", "--json", str(out)])
    assert code == 2
    assert "openvino is not installed (format 'openvino'): pip install openvino" in capsys.readouterr().err
    results = json.loads(out.read_text())["results"]
    assert "error" in results[0] and results[1]["latency_ms"]["runs"] >= 5


# --------------------------------------------------------------------------------------------- memory
def test_memory_probe_measures_the_model_not_the_eval_set(run_dir, tmp_path):
    """A 60 MB eval set instead of a 10 KB one changes nothing: the probe reads only the samples it times."""
    with np.load(run_dir / "eval.npz") as npz:
        x = npz["x"]
    big = np.repeat(x, 6000, axis=0)  # 240,000 samples of 1x8x8 float32: ~61 MB
    small_inputs = _write_npz(tmp_path / "small.npz", x=x)
    big_inputs = _write_npz(tmp_path / "big.npz", x=big)
    model = str(run_dir / "model_fp32.onnx")
    small = runner.measure_memory(model, str(small_inputs), 1)
    large = runner.measure_memory(model, str(big_inputs), 1)
    assert big.nbytes > 60e6
    for key in ("runtime_baseline_mb", "peak_mb", "model_peak_over_baseline_mb"):
        assert abs(large[key] - small[key]) < 8, (key, small, large)  # the set would add 61 MB if loaded
    assert small["samples_read"] == len(x) and large["samples_read"] == runner.MEMORY_PROBE_SAMPLES
    assert small["runtime_baseline_mb"] <= small["model_loaded_mb"] <= small["peak_mb"]
    assert large["model_peak_over_baseline_mb"] == pytest.approx(large["peak_mb"] - large["runtime_baseline_mb"])
    assert large["judged"] == runner.MEMORY_JUDGED


def test_benchmark_judges_the_model_peak_over_the_runtime_baseline(run_dir):
    result = runner.benchmark(str(run_dir / "model_fp32.onnx"), str(run_dir / "eval.npz"), runs=5, min_time_s=0)
    mem = result["memory"]
    assert result["peak_memory_mb"] == mem["model_peak_over_baseline_mb"]
    assert mem["runtime_baseline_mb"] > 10  # Python, numpy and onnxruntime are in the baseline, not the budget


def test_read_first_samples_reads_only_the_rows_asked_for(tmp_path):
    x = np.arange(5 * 3 * 2, dtype=np.float32).reshape(5, 3, 2)
    path = _write_npz(tmp_path / "in.npz", x=x, y=np.arange(5))
    assert np.array_equal(runner.read_first_samples(str(path), 2), x[:2])
    assert np.array_equal(runner.read_first_samples(str(path), 99), x)
    assert np.array_equal(runner.read_first_samples(str(path), 3, key="y"), np.arange(3))
    with pytest.raises(runner.RunnerError, match="lack the array 'z'"):
        runner.read_first_samples(str(path), 1, key="z")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(runner.RunnerError, match="cannot read inputs"):
        runner.read_first_samples(str(tmp_path / "bad.npz"), 1)


def test_describe_machine_names_the_board_its_cores_and_cpu_flags(monkeypatch):
    pi_cpuinfo = ("processor\t: 0\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\n"
                  "processor\t: 1\nCPU part\t: 0xd08\nHardware\t: BCM2835\nModel\t: Raspberry Pi 4 Model B Rev 1.4\n")
    files = {"/proc/cpuinfo": pi_cpuinfo, "/proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.4",
             "/proc/meminfo": "MemTotal:        3884400 kB\n"}
    monkeypatch.setattr(runner, "_read_text", files.get)
    m = runner.describe_machine()
    assert m["cpu"] == "Raspberry Pi 4 Model B Rev 1.4" and m["board"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert m["cpu_cores"] == ["Cortex-A72"] and m["cpu_flags"] is None and m["memory_mb"] == 3793
    x86 = "processor\t: 0\nmodel\t\t: 17\nmodel name\t: AMD EPYC 7763\nflags\t\t: fpu sse4_2 avx2 fma avx512f\n"
    monkeypatch.setattr(runner, "_read_text", {"/proc/cpuinfo": x86}.get)
    m = runner.describe_machine()
    assert m["cpu"] == "AMD EPYC 7763" and m["cpu_flags"] == ["avx2", "fma", "avx512f"] and m["board"] is None


# --------------------------------------------------------------------------------------------- slow
def device_venv(name: str, requirements: list[str]) -> Path:
    """A venv with only ``requirements`` (cached by Python version and requirements); built atomically."""
    key = hashlib.sha256(json.dumps([sys.version_info[:2], requirements]).encode()).hexdigest()[:12]
    path = VENV_CACHE / f"{name}-py{sys.version_info[0]}{sys.version_info[1]}-{key}"
    python = path / "bin" / "python"
    if python.exists():
        return python
    tmp = VENV_CACHE / f".{path.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(tmp)], check=True, capture_output=True)
    pip = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          *requirements], capture_output=True, text=True, timeout=900)
    if pip.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"pip install {requirements} failed: {pip.stderr[-2000:]}")
    # venvs hard-code their path in scripts; python itself works from the renamed directory via pyvenv.cfg.
    try:
        os.replace(tmp, path)
    except OSError:  # another process built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return python


def tflite_run_dir(root: Path) -> Path:
    """The tiny student as .tflite (litert-torch) with its manifest; the conversion is cached beside the venvs."""
    import torch

    from edgekd.models.students import build_model

    cached = VENV_CACHE / f"student-{torch.__version__}.tflite"
    if not cached.exists():
        import litert_torch

        torch.manual_seed(0)
        model = build_model("mobilenetv2", (1, 8, 8), 4, width=0.5, depth=1, expand=2).eval()
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        litert_torch.convert(model, (torch.zeros(1, 1, 8, 8),)).export(str(tmp))
        os.replace(tmp, cached)
    run = root / "tflite-run"
    run.mkdir(exist_ok=True)
    shutil.copyfile(cached, run / "model_fp32.tflite")
    shutil.copyfile(make_run_dir(root) / "eval.npz", run / "eval.npz")
    digest = runner.sha256_file(str(run / "model_fp32.tflite"))
    (run / "manifest.json").write_text(json.dumps({"artifacts": [
        {"path": "model_fp32.tflite", "format": "tflite", "precision": "fp32", "sha256": digest,
         "files": [{"path": "model_fp32.tflite", "sha256": digest}]}]}))
    return run


@pytest.mark.slow
@pytest.mark.parametrize(("name", "requirements", "fmt"), DEVICE_VENVS, ids=[v[0] for v in DEVICE_VENVS])
def test_runs_with_only_numpy_and_the_runtime(name, requirements, fmt, tmp_path_factory, tmp_path):
    python = str(device_venv(name, requirements))
    root = tmp_path_factory.getbasetemp()
    src = tflite_run_dir(root) if fmt == "tflite" else make_run_dir(root)
    artifact = {"onnx": "model_fp32.onnx", "openvino": "model_fp32.xml", "tflite": "model_fp32.tflite"}[fmt]
    # A device-like directory: the artifact, its manifest, the inputs and runner.py; nothing of edgekd.
    device = tmp_path / "device"
    device.mkdir()
    for f in src.iterdir():
        if f.is_file():
            shutil.copyfile(f, device / f.name)
    shutil.copyfile(RUNNER, device / "runner.py")
    listed = subprocess.run([python, "-c", "import importlib.util as u, json, numpy; print(json.dumps("
                             "[numpy.__version__, [m for m in ('torch', 'edgekd') if u.find_spec(m)]]))"],
                            capture_output=True, text=True, check=True, cwd=device)
    numpy_version, present = json.loads(listed.stdout)
    assert present == [] and numpy_version == requirements[0].split("==")[1]

    proc = subprocess.run([python, "runner.py", artifact, "--inputs", "eval.npz", "--runs", "50", "--warmup", "5",
                           "--min-time", "0.1", "--threads", "1", "--json", "result.json"],
                          cwd=device, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((device / "result.json").read_text())
    assert r["format"] == fmt and r["sha256_verified"] and r["torch_imported"] is False
    assert r["machine"]["numpy"] == numpy_version
    assert r["accuracy"] == pytest.approx(34 / 40) and r["parity"]["top1_agreement"] == 1.0
    assert r["parity"]["max_abs_diff"] < 1e-3 and r["peak_memory_mb"] > 0 and r["latency_ms"]["p50"] > 0

    # The other formats' runtimes are absent here: the runner names the package to install, exit 2.
    other = "model_fp32.onnx" if fmt != "onnx" else "model_fp32.xml"
    if (src / other).exists():
        shutil.copyfile(src / other, device / other)
        if other.endswith(".xml"):
            shutil.copyfile(src / "model_fp32.bin", device / "model_fp32.bin")
        proc = subprocess.run([python, "runner.py", other, "--inputs", "eval.npz"], cwd=device, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and "is not installed" in proc.stderr and "pip install" in proc.stderr
