"""Does the baseline gate survive a noisy runner? Same artifact must pass 20/20, a slower one must fail 20/20.

Builds (or reuses, from the git-ignored ``benchmarks/.cache/gate_noise/``) one real x86-cpu run on the built-in
digits data with small settings. Its report.json is the baseline, measured during the build as in CI. Then, 20
times each and interleaved so both see the same machine load:

* "same": the shipped OpenVINO int8 artifact is re-measured with the standalone runner (``edgekd.bench.run_local``)
  and its fresh latency and memory go into a copy of the report, which is compared with the baseline;
* "slow": the run's teacher artifact in the same runtime (several times the student's MACs) is measured the same
  way and its numbers put in the student's row: a pull request that made the shipped model clearly slower.

Writes ``benchmarks/results/gate_noise.json`` (same_pass, same_total, slow_fail, slow_total, per-iteration rows).
Runs with no arguments in about 5-10 minutes on a shared 2-core machine.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from edgekd.api import BuildOptions, build
from edgekd.bench import run_local
from edgekd.gate import FAIL, compare_to_baseline
from edgekd.io import write_json

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "gate_noise"
RUN = CACHE / "run"
RESULTS = HERE / "results" / "gate_noise.json"
REPEATS = 20
RUNS, WARMUP = 200, 20  # the runner raises RUNS until the timed work lasts its minimum time (0.5 s)
MAX_REGRESSION_PCT = 10.0
# Small but real: the default teacher and a budget-sized student, a few epochs each (accuracy is not the point).
BUILD = {"target": "x86-cpu", "data": "digits", "epochs": 8, "teacher_epochs": 8, "seed": 0}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def get_run() -> dict[str, Any]:
    """The cached run's report, building it first when absent or made with other settings."""
    stamp = CACHE / "build.json"
    report_path = RUN / "report.json"
    if report_path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == BUILD:
        log(f"reusing the cached run {RUN} (delete {CACHE} to rebuild)")
        return json.loads(report_path.read_text())
    log(f"building a small {BUILD['target']} run on {BUILD['data']} into {RUN} (cached for next time)")
    options = BuildOptions(**BUILD, out=RUN, runs=RUNS, warmup=WARMUP, progress=False,
                           teacher_cache=CACHE / "teachers", log=log)
    result = build(options)
    write_json(stamp, BUILD)
    return result.report


def with_measurement(report: dict[str, Any], row: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``report`` holding only ``row``, its latency and memory replaced by a fresh runner ``result``."""
    fresh = copy.deepcopy(report)
    new_row = copy.deepcopy(row)
    lat = result["latency_ms"]
    new_row["latency_ms"] = {k: lat[k] for k in ("p50", "p90", "p95", "p99", "mean", "std")}
    new_row["latency_ms_detail"] = lat
    new_row["noise_pct"] = lat.get("noise_pct")
    new_row["peak_memory_mb"] = result.get("peak_memory_mb")
    fresh["artifacts"] = [new_row]
    return fresh


def judge(current: dict[str, Any], baseline: dict[str, Any]) -> tuple[bool, list[str], dict[str, Any]]:
    """(passed, failed metrics, the p50/p95 rows) of the baseline comparison for the one artifact."""
    rows = compare_to_baseline(current, baseline, MAX_REGRESSION_PCT)
    failed = [r.metric for r in rows if r.status == FAIL]
    latency = {r.metric: {"baseline": r.baseline, "current": r.current, "status": r.status,
                          "baseline_interval": r.baseline_interval, "current_interval": r.current_interval,
                          "noise": r.noise}
               for r in rows if r.metric.startswith("latency")}
    return not failed, failed, latency


def main() -> int:
    t0 = time.perf_counter()
    baseline = get_run()
    manifest = json.loads((RUN / "manifest.json").read_text())
    fmt = "openvino"
    row = next(a for a in baseline["artifacts"] if a["format"] == fmt and a.get("shipped"))
    teacher = next(e for e in manifest["artifacts"] if e["role"] == "teacher-reference" and e["format"] == fmt)
    inputs = RUN / manifest["eval_inputs"]["path"]
    threads = int(baseline["measured_on"]["threads"])
    base_lat = row["latency_ms"]
    log(f"baseline {row['path']}: p50 {base_lat['p50']:.4f} ms, p95 {base_lat['p95']:.4f} ms "
        f"(measured during the build); slow variant: {teacher['path']} measured in its place")

    iterations = []
    for i in range(REPEATS):
        load = os.getloadavg()[0]
        same = run_local(RUN / row["path"], inputs, RUNS, WARMUP, threads)
        slow = run_local(RUN / teacher["path"], inputs, RUNS, WARMUP, threads)
        same_ok, same_failed, same_lat = judge(with_measurement(baseline, row, same), baseline)
        slow_ok, slow_failed, slow_lat = judge(with_measurement(baseline, row, slow), baseline)
        it = {
            "i": i + 1, "load_1min": round(load, 2),
            "same": {"p50": same["latency_ms"]["p50"], "p95": same["latency_ms"]["p95"],
                     "peak_memory_mb": same.get("peak_memory_mb"), "passed": same_ok, "failed": same_failed,
                     "latency": same_lat},
            "slow": {"p50": slow["latency_ms"]["p50"], "p95": slow["latency_ms"]["p95"],
                     "peak_memory_mb": slow.get("peak_memory_mb"), "passed": slow_ok, "failed": slow_failed,
                     "latency": slow_lat},
        }
        iterations.append(it)
        log(f"  {i + 1:2d}/{REPEATS}: same p50 {it['same']['p50']:.4f} -> {'pass' if same_ok else 'FAIL'}, "
            f"slow p50 {it['slow']['p50']:.4f} -> {'pass' if slow_ok else 'FAIL ' + ','.join(slow_failed)}")

    same_pass = sum(it["same"]["passed"] for it in iterations)
    slow_fail = sum(not it["slow"]["passed"] for it in iterations)
    # What a plain "p50 up by more than 10 %" rule would have said about the very same artifact: the flake rate.
    naive_flakes = sum(it["same"]["p50"] > base_lat["p50"] * (1 + MAX_REGRESSION_PCT / 100) for it in iterations)
    bar = iterations[0]["same"]["latency"]["latency_ms_p50"]["baseline_interval"][1] * (1 + MAX_REGRESSION_PCT / 100)
    floors = {k: [it[k]["latency"]["latency_ms_p50"]["current_interval"][0] for it in iterations]
              for k in ("same", "slow")}
    head = f"{'#':>2}  {'load':>5}  {'same p50':>9}  {'same p95':>9}  {'same':<22}  {'slow p50':>9}  " \
           f"{'slow p95':>9}  slow"
    print(f"baseline {row['path']} ({fmt} {row['precision']}): p50 {base_lat['p50']:.4f} ms, "
          f"p95 {base_lat['p95']:.4f} ms; slow = {teacher['path']}; --max-regression {MAX_REGRESSION_PCT:g} %")
    print(head)
    print("-" * len(head))
    for it in iterations:
        s, w = it["same"], it["slow"]
        print(f"{it['i']:>2}  {it['load_1min']:>5.2f}  {s['p50']:>9.4f}  {s['p95']:>9.4f}  "
              f"{'pass' if s['passed'] else 'FAIL ' + ','.join(s['failed']):<22}  {w['p50']:>9.4f}  {w['p95']:>9.4f}  "
              f"{'pass' if w['passed'] else 'FAIL ' + ','.join(w['failed'])}")
    print(f"\nsame artifact vs its baseline: passed {same_pass}/{REPEATS}")
    print(f"slower artifact vs the baseline: failed {slow_fail}/{REPEATS}")
    print(f"p50 regression bar {bar:.4f} ms; current floors (p5 lower bound): same {min(floors['same']):.4f}-"
          f"{max(floors['same']):.4f} ms, slow {min(floors['slow']):.4f}-{max(floors['slow']):.4f} ms")
    print(f"a plain 'p50 > baseline + {MAX_REGRESSION_PCT:g} %' rule would have failed the same artifact "
          f"{naive_flakes}/{REPEATS} times")
    elapsed = time.perf_counter() - t0
    write_json(RESULTS, {
        "same_pass": same_pass, "same_total": REPEATS, "slow_fail": slow_fail, "slow_total": REPEATS,
        "artifact": row["path"], "slow_artifact": teacher["path"], "format": fmt, "threads": threads,
        "max_regression_pct": MAX_REGRESSION_PCT, "runs_requested": RUNS,
        "naive_p50_rule_same_fail": naive_flakes, "p50_regression_bar_ms": bar,
        "floor_ms": {k: {"min": min(v), "max": max(v)} for k, v in floors.items()},
        "baseline": {"p50": base_lat["p50"], "p95": base_lat["p95"], "peak_memory_mb": row.get("peak_memory_mb")},
        "measured_on": {k: baseline["measured_on"].get(k) for k in ("arch", "cpu", "cores", "threads")},
        "statistics": "per quantile (p50, p95): seeded two-stage (block, then sample) bootstrap 95 % intervals; "
                      "regression only when the current run's floor (p5, lower bound) exceeds the baseline's "
                      "upper bound by more than --max-regression and the plain change exceeds it too "
                      "(edgekd/gate.py)",
        "elapsed_s": round(elapsed, 1),
        "iterations": iterations,
    })
    print(f"wrote {RESULTS.relative_to(HERE.parent)} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
