"""Does runner.py time an OpenVINO IR the way OpenVINO's own benchmark_app does?

Builds an IR that is big enough for timing to mean something (the default teacher CNN at 28x28 input,
fp32; random weights, because latency doesn't depend on them), then runs, back to back and alternating,
``runner.py`` and ``benchmark_app`` with the same settings:

    CPU, batch 1, sync API (one request at a time), and the runner's plugin config passed to benchmark_app
    with -load_config: PERFORMANCE_HINT=LATENCY, NUM_STREAMS=1, INFERENCE_NUM_THREADS=N,
    INFERENCE_PRECISION_HINT=f32 (thread pinning left at the plugin default in both).

Each tool runs ROUNDS times; the p50 of each tool is the median of its rounds' p50s, so a burst of load from
elsewhere on the machine hits both. Prints both p50s and their ratio (runner / benchmark_app; must be within
15 %), and writes benchmarks/results/runner_vs_benchmark_app.json. The IR is cached in benchmarks/.cache/.

    python benchmarks/runner_vs_benchmark_app.py            # defaults: 28x28, threads = min(2, cores), 5 rounds of 2 s
    python benchmarks/runner_vs_benchmark_app.py --quick --out /tmp/r.json   # 1 round of 1 s: checks it runs

The verdict (agree within 15 %) is computed from the rounds by :func:`verdict`; a host busier than ``QUIET_LOAD``
(1-minute load average) makes it "invalid: host busy".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from _provenance import OUT_HELP, Recorder, results_path, stamped  # noqa: E402

from edgekd.io import write_json  # noqa: E402

RUNNER = REPO / "edgekd" / "runner.py"
TOLERANCE = 0.15
QUIET_LOAD = 2.5  # 1-minute load average: the tools' threads (2 by default) plus half a core of anyone else's
ROWS = "rounds"
TOOL_FAILED = 3  # exit 1 means the tools disagree (the results file is written); 3 that one of them did not run


def build_ir(size: int, cache: Path) -> Path:
    """teacher_cnn at (1, size, size), 10 classes, as an fp32 IR with a manifest (cached by size and versions)."""
    import openvino as ov
    import torch

    from edgekd.io import sha256_file, write_json
    from edgekd.models.students import build_model

    out = cache / f"teacher_cnn-{size}x{size}-torch{torch.__version__}-ov{ov.__version__.split('-')[0]}"
    xml = out / "model_fp32.xml"
    if (out / "manifest.json").is_file():
        print(f"model: cached IR {xml}")
        return xml
    print(f"model: building teacher_cnn at 1x{size}x{size} (random weights) -> {xml}")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache))
    try:
        torch.manual_seed(0)
        model = build_model("teacher_cnn", (1, size, size), 10).eval()
        onnx_path = tmp / "model.onnx"
        torch.onnx.export(model, (torch.zeros(1, 1, size, size),), str(onnx_path), dynamo=False,
                          input_names=["input"], output_names=["logits"])
        ov.save_model(ov.convert_model(str(onnx_path)), str(tmp / xml.name), compress_to_fp16=False)
        onnx_path.unlink()
        files = [tmp / xml.name, tmp / "model_fp32.bin"]
        entry = [{"path": f.name, "sha256": sha256_file(f)} for f in files]
        write_json(tmp / "manifest.json", {"artifacts": [
            {"path": xml.name, "format": "openvino", "precision": "fp32", "sha256": entry[0]["sha256"],
             "files": entry}]})
        rng = np.random.default_rng(0)
        np.savez(tmp / "eval.npz", x=rng.normal(size=(64, 1, size, size)).astype(np.float32),
                 y=rng.integers(0, 10, 64))
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return xml


def tool_failed(message: str) -> NoReturn:
    """A tool that did not run is not a disagreement: its own words on stderr, exit 3, no results file."""
    print(message, file=sys.stderr)
    sys.exit(TOOL_FAILED)


def run_runner(xml: Path, threads: int, seconds: float) -> dict:
    """runner.py as a device runs it (fresh process), fp32 pinned by the manifest's precision."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        proc = subprocess.run([sys.executable, str(RUNNER), str(xml), "--inputs", str(xml.parent / "eval.npz"),
                               "--threads", str(threads), "--runs", "100", "--warmup", "20", "--min-time",
                               str(seconds), "--max-runs", "100000", "--no-memory", "--json", str(out)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            tool_failed(f"runner.py failed: {proc.stderr.strip()[-800:]}")
        return json.loads(out.read_text())


def parse_median_ms(text: str) -> float | None:
    """benchmark_app's console median in ms: it prints "us" instead of "ms" when the mean is under 1 ms."""
    found = re.search(r"Median:\s+([0-9.]+)\s*(ms|us)\b", text)
    if not found:
        return None
    return float(found.group(1)) / (1000.0 if found.group(2) == "us" else 1.0)


def run_benchmark_app(xml: Path, threads: int, seconds: float, cache: Path) -> dict:
    """benchmark_app with exactly the runner's plugin config (-load_config), sync API, batch 1; its median."""
    app = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    # The same properties runner.py's OpenVinoSession passes to compile_model. (benchmark_app refuses -nthreads
    # and -nstreams together with -hint latency, a UI rule of its own; -load_config sets all four as the runner.)
    config = {"CPU": {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads),
                      "INFERENCE_PRECISION_HINT": "f32"}}
    cfg = cache / f"ov-config-{threads}.json"
    cfg.write_text(json.dumps(config))
    args = [app, "-m", str(xml), "-d", "CPU", "-b", "1", "-api", "sync", "-load_config", str(cfg),
            "-t", str(max(1, round(seconds)))]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        tool_failed(f"benchmark_app failed: {(proc.stdout + proc.stderr).strip()[-1500:]}")
    text = proc.stdout
    median_ms = parse_median_ms(text)
    count = re.search(r"Count:\s+(\d+)", text)
    if median_ms is None:
        tool_failed(f"could not find the median latency in benchmark_app's output:\n{text[-1500:]}")
    settings = {k: v.strip() for k, v in re.findall(r"\[ INFO \]\s+(INFERENCE_NUM_THREADS|NUM_STREAMS|"
                                                      r"INFERENCE_PRECISION_HINT|PERFORMANCE_HINT|"
                                                      r"ENABLE_CPU_PINNING):\s*(.+)", text)}
    return {"p50": median_ms, "count": int(count.group(1)) if count else None, "settings": settings,
            "command": " ".join(args[1:])}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=28, help="input height/width of the teacher CNN")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per tool per round")
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s: checks the script runs")
    parser.add_argument("--cache-dir", default=str(HERE / ".cache" / "runner_vs_benchmark_app"),
                        help="where the IR is cached")
    parser.add_argument("--out", help=OUT_HELP)
    args = parser.parse_args(argv)
    args.out = args.out or str(results_path("runner_vs_benchmark_app", args.quick))
    if args.quick:
        args.rounds, args.seconds = 1, 1.0
    return args


def verdict(rounds: list[dict]) -> dict:
    """runner.py's p50 over benchmark_app's (medians over the rounds) and whether they agree within TOLERANCE."""
    ratio = (statistics.median(r["runner_p50_ms"] for r in rounds)
             / statistics.median(r["benchmark_app_p50_ms"] for r in rounds))
    return {"ratio": ratio, "within_tolerance": abs(ratio - 1) <= TOLERANCE}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recorder = Recorder(quick=args.quick, quiet_load=QUIET_LOAD)
    cache = Path(args.cache_dir)
    xml = build_ir(args.size, cache)
    rounds = []
    for i in range(args.rounds):
        r = run_runner(xml, args.threads, args.seconds)
        b = run_benchmark_app(xml, args.threads, args.seconds, cache)
        rounds.append({"runner_p50_ms": r["latency_ms"]["p50"], "runner_runs": r["latency_ms"]["runs"],
                       "runner_noise_pct": r["latency_ms"]["noise_pct"], "benchmark_app_p50_ms": b["p50"],
                       "benchmark_app_count": b["count"]})
        print(f"round {i + 1}: runner p50 {r['latency_ms']['p50']:.4f} ms ({r['latency_ms']['runs']} runs, "
              f"noise {r['latency_ms']['noise_pct']:.1f} %)   benchmark_app median {b['p50']:.4f} ms "
              f"({b['count']} iterations)")
    agreed = verdict(rounds)
    print(f"\nratio runner/benchmark_app = {agreed['ratio']:.3f} "
          f"({'within' if agreed['within_tolerance'] else 'OUTSIDE'} {TOLERANCE:.0%})")
    print(f"settings: runner inference precision {r['runtime']['inference_precision']}, threads {args.threads}; "
          f"benchmark_app {b['settings']}")
    result = {
        "runner_p50_ms": statistics.median(x["runner_p50_ms"] for x in rounds),
        "benchmark_app_p50_ms": statistics.median(x["benchmark_app_p50_ms"] for x in rounds),
        "tolerance": TOLERANCE, "model": f"teacher_cnn 1x{args.size}x{args.size} fp32 IR", "threads": args.threads,
        "rounds": rounds, "openvino": r["runtime"]["version"], "machine": r["machine"],
        "benchmark_app_command": b["command"], "benchmark_app_settings": b["settings"],
    }
    out = stamped(result, agreed, recorder.finish())
    write_json(args.out, out)
    print(f"wrote {args.out} (verdict: {out['verdict']})")
    return 0 if agreed["within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
