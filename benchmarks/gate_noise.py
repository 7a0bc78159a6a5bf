"""Does the baseline gate hold on real artifacts? Same artifact: no false alarms; slower artifacts: caught.

Builds (or reuses, from the git-ignored ``benchmarks/.cache/gate_noise/``) one real x86-cpu run on the built-in
digits data with small settings; its shipped OpenVINO int8 student is "the artifact". Then, all measured with the
standalone runner (``edgekd.bench.run_local``) exactly as a build measures:

* baseline: the artifact measured once at the start (what a baseline report holds);
* slower artifacts: wider students of the same family (MobileNetV2, same depth and expansion), exported to OpenVINO
  int8 with the same calibration data. Each candidate width is measured against the artifact, interleaved, and the
  widths whose slowdown is closest to 1.15x, 1.3x, 1.5x and 2x are kept (chosen on the ratio of the floors, p5,
  which a busy machine disturbs least; the factor reported is p50 / p50, measured in each iteration);
* REPEATS iterations, each measuring the artifact ("same") and every slower artifact in a shuffled order, so all
  of them see the same machine. Each fresh measurement goes into a copy of the report in the artifact's row and
  is compared with the baseline by ``edgekd.gate.compare_to_baseline`` (--max-regression 10).

A "same" run is a false alarm when any row fails (latency, memory, size, accuracy). A slower artifact is detected
when a latency row (p5, p50 or p95) fails; its size and accuracy rows are not counted (a wider untrained student is
bigger and less accurate, which says nothing about the latency rule). ``factor`` is measured in the same iteration.

Writes ``benchmarks/results/gate_noise.json``. ``python benchmarks/gate_noise.py --repeats 2`` checks the script
in a few minutes; the numbers that count come from 20 repeats on a quiet machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.api import BuildOptions, build
from edgekd.bench import run_local
from edgekd.gate import FAIL, UNVERIFIED, compare_to_baseline
from edgekd.io import write_json

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache" / "gate_noise"
RUN = CACHE / "run"
VARIANTS = CACHE / "variants"
RESULTS = HERE / "results" / "gate_noise.json"
RUNS, WARMUP = 200, 20  # the runner raises RUNS until the timed work lasts its minimum time (0.5 s)
MAX_REGRESSION_PCT = 10.0
TARGET_FACTORS = (1.15, 1.3, 1.5, 2.0)
# Candidate widths, as multiples of the shipped student's width; the kept ones are chosen by measurement.
WIDTH_MULTIPLES = (1.17, 1.33, 1.5, 1.67, 2.0, 2.33, 2.67, 3.0, 3.5, 4.0, 5.0)
CALIBRATION_ROUNDS = 3
LATENCY_METRICS = ("latency_ms_p5", "latency_ms_p50", "latency_ms_p95")
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


def export_variants(report: dict[str, Any]) -> dict[float, Path]:
    """Wider students of the shipped family as OpenVINO int8, one per width multiple (cached)."""
    from edgekd.backends import Calibration
    from edgekd.data import load_dataset
    from edgekd.formats import get_backend
    from edgekd.models.students import build_model

    student = report["student"]
    config = dict(student["config"])
    data = None
    out: dict[float, Path] = {}
    for multiple in WIDTH_MULTIPLES:
        path = VARIANTS / f"width_x{multiple:g}" / "model_int8.xml"
        out[multiple] = path
        if path.is_file():
            continue
        if data is None:
            data = load_dataset(BUILD["data"], seed=BUILD["seed"])
        path.parent.mkdir(parents=True, exist_ok=True)
        wider = {**config, "width": config["width"] * multiple}
        model = build_model(student["family"], data.x_test.shape[1:], len(data.classes), **wider).eval()
        calibration = Calibration(data.x_train[:300], {"source": "digits train[:300]"})
        get_backend("openvino").export(model, data.x_test[:1], path, "int8", calibration)
        log(f"exported {path.parent.name}: {wider}")
    return out


def measure(path: Path, inputs: Path, threads: int, memory: bool = False) -> dict[str, Any]:
    return run_local(path, inputs, RUNS, WARMUP, threads, verify=False, memory=memory)


def floor_ms(result: dict[str, Any]) -> float:
    return float(np.percentile(result["latency_ms"]["samples_ms"], 5))


def choose_variants(original: Path, candidates: dict[float, Path], inputs: Path,
                    threads: int) -> list[dict[str, Any]]:
    """Per target factor, the candidate whose slowdown (median floor ratio of interleaved rounds) is closest."""
    ratios: dict[float, list[float]] = {m: [] for m in candidates}
    for r in range(CALIBRATION_ROUNDS):
        for multiple, path in candidates.items():
            base = floor_ms(measure(original, inputs, threads))
            ratios[multiple].append(floor_ms(measure(path, inputs, threads)) / base)
        log(f"  calibration round {r + 1}/{CALIBRATION_ROUNDS}: "
            + ", ".join(f"x{m:g} {ratios[m][-1]:.2f}" for m in candidates))
    measured = {m: float(np.median(v)) for m, v in ratios.items()}
    chosen, used = [], set()
    for factor in TARGET_FACTORS:
        multiple = min((m for m in measured if m not in used), key=lambda m: abs(np.log(measured[m] / factor)))
        used.add(multiple)
        chosen.append({"target_factor": factor, "width_multiple": multiple, "calibration_factor": measured[multiple],
                       "path": candidates[multiple]})
    return chosen


def with_measurement(report: dict[str, Any], row: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``report`` holding only ``row``, its measured fields replaced by a fresh runner ``result``."""
    fresh = copy.deepcopy(report)
    new_row = copy.deepcopy(row)
    lat = result["latency_ms"]
    new_row["latency_ms"] = {k: lat[k] for k in ("p50", "p90", "p95", "p99", "mean", "std")}
    new_row["latency_ms_detail"] = lat
    new_row["noise_pct"] = lat.get("noise_pct")
    for key in ("peak_memory_mb", "memory", "accuracy", "predictions"):
        if key in result:
            new_row[key] = result[key]
    fresh["artifacts"] = [new_row]
    return fresh


def judge(current: dict[str, Any], baseline: dict[str, Any], labels: np.ndarray) -> dict[str, Any]:
    """The comparison's verdict: failed rows (all, and latency only), unverified rows, each latency row's MDR."""
    rows = compare_to_baseline(current, baseline, MAX_REGRESSION_PCT, labels=labels)
    latency = {r.metric: {"status": r.status, "change_pct": r.change_pct, "mdr_pct": r.mdr_pct}
               for r in rows if r.metric in LATENCY_METRICS}
    return {"failed": [r.metric for r in rows if r.status == FAIL],
            "latency_failed": [m for m, v in latency.items() if v["status"] == FAIL],
            "unverified": [r.metric for r in rows if r.status == UNVERIFIED], "latency": latency}


def run_iteration(i: int, row: dict, baseline: dict, variants: list[dict], inputs: Path, threads: int,
                  labels: np.ndarray, rng: random.Random) -> dict[str, Any]:
    """Measure the artifact and every slower one, shuffled; judge each against the baseline."""
    jobs = [("same", RUN / row["path"])] + [(f"x{v['target_factor']:g}", v["path"]) for v in variants]
    rng.shuffle(jobs)
    load = os.getloadavg()[0]
    results = {name: measure(path, inputs, threads, memory=name == "same") for name, path in jobs}
    same_p50, same_floor = results["same"]["latency_ms"]["p50"], floor_ms(results["same"])
    it: dict[str, Any] = {"i": i, "load_1min": round(load, 2), "order": [name for name, _ in jobs]}
    for name, result in results.items():
        verdict = judge(with_measurement(baseline, row, result), baseline, labels)
        it[name] = {"p5": floor_ms(result), "p50": result["latency_ms"]["p50"], "p95": result["latency_ms"]["p95"],
                    "factor": result["latency_ms"]["p50"] / same_p50, "floor_factor": floor_ms(result) / same_floor,
                    **verdict}
    return it


def summarize(iterations: list[dict], variants: list[dict]) -> dict[str, Any]:
    same = [it["same"] for it in iterations]
    out: dict[str, Any] = {
        "same_pass": sum(not s["failed"] for s in same), "same_total": len(same),
        "same_unverified": sum(bool(set(s["unverified"]) & set(LATENCY_METRICS)) for s in same),
        "same_median_mdr_pct": {m: _median(s["latency"][m]["mdr_pct"] for s in same) for m in LATENCY_METRICS},
        "slowdowns": [],
    }
    for v in variants:
        key = f"x{v['target_factor']:g}"
        runs = [it[key] for it in iterations]
        out["slowdowns"].append({
            "factor": round(float(np.median([r["factor"] for r in runs])), 3),
            "detected": sum(bool(r["latency_failed"]) for r in runs), "total": len(runs),
            "median_mdr_pct": _median(r["latency"]["latency_ms_p50"]["mdr_pct"] for r in runs),
            "target_factor": v["target_factor"], "width_multiple": v["width_multiple"],
            "factor_range": [round(min(r["factor"] for r in runs), 3), round(max(r["factor"] for r in runs), 3)],
            "floor_factor": round(float(np.median([r["floor_factor"] for r in runs])), 3),
            "detected_by": {m: sum(r["latency"][m]["status"] == FAIL for r in runs) for m in LATENCY_METRICS},
            "unverified_by": {m: sum(r["latency"][m]["status"] == UNVERIFIED for r in runs) for m in LATENCY_METRICS},
            "median_mdr_pct_by_quantile": {m: _median(r["latency"][m]["mdr_pct"] for r in runs)
                                           for m in LATENCY_METRICS},
        })
    return out


def _median(values: Any) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.median(vals)), 2) if vals else None


def print_table(summary: dict[str, Any]) -> None:
    print(f"same artifact vs its baseline: {summary['same_pass']}/{summary['same_total']} passed (no row failed), "
          f"{summary['same_unverified']} with a latency row unverifiable at the noise; median MDR p5/p50/p95 "
          + " / ".join(f"{summary['same_median_mdr_pct'][m]} %" for m in LATENCY_METRICS))
    head = (f"{'target':>6}  {'factor':>6}  {'range':>11}  {'p5 ratio':>8}  {'detected':>8}  {'by p5/p50/p95':>13}  "
            f"{'MDR p50':>7}")
    print(head)
    print("-" * len(head))
    for s in summary["slowdowns"]:
        by = "/".join(str(s["detected_by"][m]) for m in LATENCY_METRICS)
        print(f"{s['target_factor']:>6g}  {s['factor']:>6.3f}  {s['factor_range'][0]:.2f}-{s['factor_range'][1]:.2f}"
              f"  {s['floor_factor']:>8.3f}  {s['detected']:>3}/{s['total']:<4}  {by:>13}  {s['median_mdr_pct']:>5} %")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="iterations (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-iteration measurement order")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    report = get_run()
    row = next(a for a in report["artifacts"] if a["format"] == "openvino" and a.get("shipped"))
    inputs = RUN / "eval.npz"
    threads = int(report["measured_on"]["threads"])
    with np.load(inputs) as npz:
        labels = npz["y"]
    log(f"measuring the baseline: {row['path']} ({threads} thread(s))")
    baseline = with_measurement(report, row, measure(RUN / row["path"], inputs, threads, memory=True))
    log("choosing slower artifacts (wider students) by measurement")
    variants = choose_variants(RUN / row["path"], export_variants(report), inputs, threads)
    rng = random.Random(args.seed)
    iterations = []
    for i in range(args.repeats):
        iterations.append(run_iteration(i + 1, row, baseline, variants, inputs, threads, labels, rng))
        it = iterations[-1]
        same = "FAIL " + ",".join(it["same"]["failed"]) if it["same"]["failed"] else "pass"
        log(f"  {i + 1:2d}/{args.repeats}: same {same}; "
            + ", ".join(f"{k} {it[k]['factor']:.2f}->{'caught' if it[k]['latency_failed'] else 'missed'}"
                        for k in it["order"] if k != "same"))
    summary = summarize(iterations, variants)
    print_table(summary)
    elapsed = time.perf_counter() - t0
    base_lat = baseline["artifacts"][0]["latency_ms"]
    write_json(RESULTS, {
        "status": "result" if args.repeats >= 20 else f"validation run ({args.repeats} repeats): not the result; "
                                                       "run 20 repeats on a quiet machine",
        **summary,
        "artifact": row["path"], "format": "openvino", "precision": row["precision"], "threads": threads,
        "max_regression_pct": MAX_REGRESSION_PCT, "runs_requested": RUNS, "repeats": args.repeats,
        "baseline": {"p50": base_lat["p50"], "p95": base_lat["p95"],
                     "peak_memory_mb": baseline["artifacts"][0].get("peak_memory_mb")},
        "variants": [{k: (str(v) if k == "path" else v) for k, v in var.items()} for var in variants],
        "measured_on": {k: report["measured_on"].get(k) for k in ("arch", "cpu", "cores", "threads")},
        "load_1min": [it["load_1min"] for it in iterations],
        "rule": "edgekd/gate_stats.py: per quantile (p5, p50, p95) current vs the same quantile of the baseline; "
                "fail when the ratio exceeds 1 + max(--max-regression, MDR) (MDR from the block-to-block spread "
                "of both runs) and every block of the current run is slower than every baseline block by more "
                "than --max-regression; unverifiable when MDR > --max-regression, the blocks overlap, or the "
                "quantile lies among interruptions",
        "command": f"python benchmarks/gate_noise.py --repeats {args.repeats}",
        "elapsed_s": round(elapsed, 1),
        "iterations": iterations,
    })
    print(f"wrote {RESULTS.relative_to(HERE.parent)} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
