#!/usr/bin/env python3
"""edgekd standalone benchmark runner.

Copy this one file to a device and run it there: it imports only the standard library, numpy (1.21+, 1.x
included) and the runtime of the artifact's format (onnxruntime, openvino, ai_edge_litert or tflite_runtime).
Never torch. Python 3.9+.

    python3 runner.py ARTIFACT --inputs EVAL.npz [--runs N] [--warmup N] [--threads N] [--json OUT]

EVAL.npz holds ``x`` (normalised float32, NCHW or N x F), ``y`` (labels) and optionally ``teacher_logits`` and
``reference_logits`` (the PyTorch model's outputs, for parity). The artifact's sha256 is checked against the
``manifest.json`` beside it before anything runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

RUNNER_VERSION = "1"
FORMAT_BY_SUFFIX = {".onnx": "onnx", ".xml": "openvino", ".tflite": "tflite"}
INSTALL_HINT = {
    "onnx": "pip install onnxruntime",
    "openvino": "pip install openvino",
    "tflite": "pip install ai-edge-litert   (or, on older boards: pip install tflite-runtime 'numpy<2')",
}


class RunnerError(Exception):
    """A problem with the artifact, the inputs or the device setup, with the fix in the message."""


# ----------------------------------------------------------------------------------------------- sessions
class Session:
    """One loaded artifact. ``run`` takes a float32 batch in the canonical layout and returns float logits."""

    format = ""
    runtime = ""
    runtime_version = ""
    static_batch = False
    inference_precision = "as stored"

    def run(self, x):  # pragma: no cover - interface
        raise NotImplementedError

    def run_batched(self, x, batch_size=256):
        step = 1 if self.static_batch else batch_size
        return np.concatenate([self.run(x[i : i + step]) for i in range(0, len(x), step)])


class OnnxSession(Session):
    format = "onnx"

    def __init__(self, path, threads, precision=None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RunnerError("onnxruntime is not installed: " + INSTALL_HINT["onnx"]) from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - the runtime's own error, made readable
            raise RunnerError("onnxruntime cannot load %s: %s" % (path, _first_line(exc))) from None
        inp = self.sess.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        self.input_shape = list(inp.shape)
        self.static_batch = isinstance(inp.shape[0], int)
        self.runtime, self.runtime_version = "onnxruntime", ort.__version__

    def run(self, x):
        return self.sess.run(None, {self.input_name: x.astype(self.input_dtype, copy=False)})[0].astype(np.float32)


class OpenVinoSession(Session):
    format = "openvino"

    def __init__(self, path, threads, precision=None):
        try:
            import openvino as ov
        except ImportError:
            raise RunnerError("openvino is not installed: " + INSTALL_HINT["openvino"]) from None
        core = ov.Core()
        try:
            model = core.read_model(path)
            config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
            # The CPU plugin runs fp32 models in bf16 on CPUs that have it: pin the precision the artifact declares.
            capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if precision == "fp32" or (precision == "fp16" and "FP16" not in capabilities):
                config["INFERENCE_PRECISION_HINT"] = "f32"
            elif precision == "fp16":
                config["INFERENCE_PRECISION_HINT"] = "f16"
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # noqa: BLE001
            raise RunnerError("openvino cannot load %s: %s" % (path, _first_line(exc))) from None
        self.request = self.compiled.create_infer_request()
        shape = model.inputs[0].get_partial_shape()
        self.input_shape = [d.get_length() if d.is_static else -1 for d in shape]
        self.static_batch = shape[0].is_static
        self.runtime, self.runtime_version = "openvino", ov.get_version()
        self.inference_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(self, x):
        self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)


class TfliteSession(Session):
    format = "tflite"
    static_batch = True

    def __init__(self, path, threads, precision=None):
        interpreter_cls, self.runtime, self.runtime_version = _tflite_interpreter()
        try:
            self.interp = interpreter_cls(model_path=path, num_threads=threads)
            self.interp.allocate_tensors()
        except Exception as exc:  # noqa: BLE001
            raise RunnerError("the TFLite interpreter cannot load %s: %s" % (path, _first_line(exc))) from None
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        self.input_shape = [int(d) for d in self.inp["shape"]]

    def _to_model_layout(self, x):
        if x.ndim == 4 and list(x.shape[1:]) != self.input_shape[1:]:
            nhwc = x.transpose(0, 2, 3, 1)
            if list(nhwc.shape[1:]) == self.input_shape[1:]:
                return nhwc
        return x

    def run(self, x):
        x = self._to_model_layout(x)
        if list(x.shape) != self.input_shape:
            raise RunnerError("input shape %s does not match the model's %s" % (list(x.shape), self.input_shape))
        dtype = self.inp["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            q = x / scale  # TFLite's QUANTIZE rounds half away from zero (np.round would round half to even)
            x = np.clip(np.sign(q) * np.floor(np.abs(q) + 0.5) + zero, info.min, info.max).astype(dtype)
        else:
            x = x.astype(dtype)
        self.interp.set_tensor(self.inp["index"], x)
        self.interp.invoke()
        y = self.interp.get_tensor(self.out["index"])
        if np.issubdtype(y.dtype, np.integer):
            scale, zero = self.out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)


def _tflite_interpreter():
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as litert

        return litert.Interpreter, "ai_edge_litert", getattr(ai_edge_litert, "__version__", "unknown")
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime import interpreter as tfl

        return tfl.Interpreter, "tflite_runtime", getattr(tflite_runtime, "__version__", "unknown")
    except ImportError:
        pass
    raise RunnerError("no TFLite interpreter is installed: " + INSTALL_HINT["tflite"])


SESSIONS = {"onnx": OnnxSession, "openvino": OpenVinoSession, "tflite": TfliteSession}


def artifact_format(path):
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMAT_BY_SUFFIX:
        raise RunnerError("unknown artifact type '%s': expected one of %s" % (suffix, sorted(FORMAT_BY_SUFFIX)))
    return FORMAT_BY_SUFFIX[suffix]


def load_session(path, threads=1, precision=None):
    """Load an artifact in its real runtime; ``precision`` defaults to what its manifest entry declares."""
    if not os.path.isfile(path):
        raise RunnerError("artifact not found: %s" % path)
    if precision is None:
        precision = (find_manifest_entry(path)[1] or {}).get("precision")
    return SESSIONS[artifact_format(path)](path, threads, precision)


# ----------------------------------------------------------------------------------------------- manifest
def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def find_manifest_entry(artifact):
    """The manifest entry of ``artifact`` from manifest.json beside it, or None when there is none."""
    manifest_path = os.path.join(os.path.dirname(os.path.abspath(artifact)), "manifest.json")
    if not os.path.isfile(manifest_path):
        return None, None
    with open(manifest_path, encoding="utf-8") as fh:
        manifest = json.load(fh)
    name = os.path.basename(artifact)
    for entry in manifest.get("artifacts", []):
        if entry.get("path") == name:
            return manifest, entry
    return manifest, None


def verify_artifact(artifact):
    """Refuse to run an artifact whose files don't match the sha256 recorded in its manifest."""
    manifest, entry = find_manifest_entry(artifact)
    if manifest is None:
        raise RunnerError("no manifest.json beside %s: cannot verify its sha256 (use --no-verify to skip)" % artifact)
    if entry is None:
        raise RunnerError("manifest.json beside %s does not list it (use --no-verify to skip)" % artifact)
    base = os.path.dirname(os.path.abspath(artifact))
    for item in entry.get("files", [{"path": entry["path"], "sha256": entry["sha256"]}]):
        actual = sha256_file(os.path.join(base, item["path"]))
        if actual != item["sha256"]:
            raise RunnerError(
                "sha256 mismatch for %s: manifest says %s..., file is %s...; the file was changed or corrupted, "
                "refusing to run it" % (item["path"], item["sha256"][:12], actual[:12])
            )
    return entry


# ----------------------------------------------------------------------------------------------- measuring
def describe_machine():
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key = line.split(":")[0].strip().lower()
                if key in ("model name", "hardware", "model", "cpu model"):
                    cpu = line.split(":", 1)[1].strip()
                    if key == "model name":
                        break
    except OSError:
        pass
    return {
        "arch": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "hostname": platform.node(),
    }


def percentiles(samples_ms):
    a = np.asarray(samples_ms, dtype=np.float64)
    return {
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "std": float(a.std()),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def measure_latency(session, x, runs=200, warmup=20, blocks=5):
    """Latency of batch-1 inference: warm-up, then ``blocks`` blocks whose medians' spread is the noise."""
    samples = [x[i % len(x)][None] for i in range(min(len(x), 64))]
    for i in range(warmup):
        session.run(samples[i % len(samples)])
    per_block = max(1, runs // blocks)
    all_ms, block_medians = [], []
    for b in range(blocks):
        block = []
        for i in range(per_block):
            sample = samples[(b * per_block + i) % len(samples)]
            t0 = time.perf_counter_ns()
            session.run(sample)
            block.append((time.perf_counter_ns() - t0) / 1e6)
        block_medians.append(float(np.median(block)))
        all_ms.extend(block)
    stats = percentiles(all_ms)
    med = float(np.median(block_medians))
    stats.update(
        {
            "runs": len(all_ms),
            "warmup": warmup,
            "block_medians": block_medians,
            "samples_ms": [round(v, 6) for v in all_ms],
            "noise_pct": float(100.0 * (max(block_medians) - min(block_medians)) / med) if med > 0 else 0.0,
        }
    )
    return stats, all_ms


def peak_rss_mb():
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def measure_memory(artifact, inputs, threads, runs=20):
    """Peak resident memory of a fresh process that loads the artifact and runs it: earlier work can't count."""
    cmd = [sys.executable, os.path.abspath(__file__), artifact, "--inputs", inputs, "--threads", str(threads),
           "--memory-probe", str(runs), "--no-verify"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RunnerError("memory probe failed: %s" % (proc.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _memory_probe(artifact, inputs, threads, runs):
    x = _load_inputs(inputs)["x"]
    baseline = peak_rss_mb()
    session = load_session(artifact, threads)
    for i in range(runs):
        session.run(x[i % len(x)][None])
    peak = peak_rss_mb()
    print(json.dumps({"peak_rss_mb": peak, "baseline_rss_mb": baseline, "model_rss_mb": peak - baseline}))


def _load_inputs(path):
    if not os.path.isfile(path):
        raise RunnerError("inputs file not found: %s" % path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except Exception as exc:  # noqa: BLE001
        raise RunnerError("cannot read inputs %s: %s" % (path, _first_line(exc))) from None
    if "x" not in data:
        raise RunnerError("inputs %s lack the array 'x'" % path)
    if data["x"].dtype != np.float32:
        raise RunnerError("inputs 'x' must be float32 (normalised as the manifest says), got %s" % data["x"].dtype)
    if len(data["x"]) == 0:
        raise RunnerError("inputs %s hold no samples" % path)
    return data


def _check_shape(session, x):
    want = [d for d in session.input_shape]
    got = [1] + list(x.shape[1:])
    fits = len(want) == len(got) and all(w in (-1, g) or not isinstance(w, int) for w, g in zip(want, got))
    if not fits and isinstance(session, TfliteSession) and x.ndim == 4:
        fits = [1] + list(x.transpose(0, 2, 3, 1).shape[1:]) == want
    if not fits:
        raise RunnerError("inputs have sample shape %s but the model expects %s" % (list(x.shape[1:]), want[1:]))


def evaluate(session, data):
    """Accuracy, agreement with the teacher and parity with the reference, over all inputs."""
    x = data["x"]
    logits = session.run_batched(x)
    pred = logits.argmax(1)
    out = {"samples": int(len(x))}
    if "y" in data:
        out["accuracy"] = float((pred == data["y"]).mean())
    if "teacher_logits" in data:
        out["agreement_with_teacher"] = float((pred == data["teacher_logits"].argmax(1)).mean())
    if "reference_logits" in data:
        ref = data["reference_logits"]
        out["parity"] = {
            "max_abs_diff": float(np.abs(logits - ref).max()),
            "top1_agreement": float((pred == ref.argmax(1)).mean()),
        }
    out["predictions"] = pred.astype(int).tolist()
    return out


def benchmark(artifact, inputs, runs=200, warmup=20, threads=1, verify=True, memory=True, blocks=5):
    """Everything the device reports about one artifact, as a JSON-ready dict."""
    entry = verify_artifact(artifact) if verify else None
    data = _load_inputs(inputs)
    t0 = time.perf_counter()
    session = load_session(artifact, threads, (entry or {}).get("precision"))
    load_ms = (time.perf_counter() - t0) * 1000
    _check_shape(session, data["x"])
    t0 = time.perf_counter()
    session.run(data["x"][:1])
    first_ms = (time.perf_counter() - t0) * 1000
    latency, _ = measure_latency(session, data["x"], runs=runs, warmup=warmup, blocks=blocks)
    result = {
        "runner_version": RUNNER_VERSION,
        "artifact": os.path.basename(artifact),
        "format": session.format,
        "runtime": {"name": session.runtime, "version": session.runtime_version,
                    "inference_precision": session.inference_precision},
        "sha256_verified": entry is not None,
        "machine": describe_machine(),
        "threads": threads,
        "batch": 1,
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "latency_ms": latency,
        "throughput_per_s": 1000.0 / latency["mean"] if latency["mean"] > 0 else None,
    }
    result.update(evaluate(session, data))
    if memory:
        mem = measure_memory(artifact, inputs, threads)
        result["peak_memory_mb"] = mem["peak_rss_mb"]
        result["memory"] = mem
    result["torch_imported"] = "torch" in sys.modules
    return result


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def main(argv=None):
    parser = argparse.ArgumentParser(description="edgekd standalone benchmark runner (numpy + runtime only)")
    parser.add_argument("artifact")
    parser.add_argument("--inputs", required=True, help="EVAL.npz with x, y[, teacher_logits, reference_logits]")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check (not recommended)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child process")
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.memory_probe is not None:
            _memory_probe(args.artifact, args.inputs, args.threads, args.memory_probe)
            return 0
        if args.runs < 1 or args.warmup < 0 or args.threads < 1:
            raise RunnerError("--runs and --threads must be >= 1 and --warmup >= 0")
        result = benchmark(args.artifact, args.inputs, args.runs, args.warmup, args.threads,
                           verify=not args.no_verify, memory=not args.no_memory, blocks=args.blocks)
    except RunnerError as exc:
        print("runner error: %s" % exc, file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, args.json)
    lat = result["latency_ms"]
    print("%s [%s %s, %d thread(s)] p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  accuracy %s  peak %s MB" % (
        result["artifact"], result["runtime"]["name"], result["runtime"]["version"], args.threads,
        lat["p50"], lat["p90"], lat["p99"], "%.4f" % result["accuracy"] if "accuracy" in result else "n/a",
        "%.1f" % result["peak_memory_mb"] if "peak_memory_mb" in result else "n/a"), file=sys.stderr)
    if not args.json:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
