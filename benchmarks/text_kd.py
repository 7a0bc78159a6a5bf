"""Issue 35's measurement: on SST-2, does a text student taught by a transformer beat the same student alone, what
does int8 cost it, and how much faster than its teacher is it in the same runtime?

    python benchmarks/text_kd.py --quick --out /tmp/text_kd.json    # a tiny CSV made here, 1 seed, 1 epoch, ONNX
    # all of SST-2, the build's epochs, 3 seeds, rpi4's TFLite int8 -> results/text_kd.json (~15 min a seed here)
    nohup .venv/bin/python benchmarks/text_kd.py > runs/text_kd.log 2>&1 &

Each seed is one ``edgekd build --target rpi4 --data SST2 --text-column text --label-column label --baseline
--seed S`` through the Python API (``edgekd.api.build``), so every number is the build's own: its default text
teacher, the student the target's budget chooses, logit KD plus TinyBERT hidden-state and attention transfer when
both are transformers (``stages.distill.with_feature_kd``), the alone student with the same initial weights, the
shipped int8 artifact and its fp32 twin in the same format. Every choice (best epoch, the student) is made on the
validation split the build draws from the training set; the test split (SST-2's 872 validation sentences, the
dataset's README explains) is scored once per model by the build.

The teacher is NOT shared across seeds: the build's teacher cache key holds the teacher's TrainConfig, seed
included (``stages.teacher.teacher_cache_key``), so seed S trains its own teacher (cached for a rerun of seed S
only). Teacher accuracy is thus a mean over three teachers, and each student is taught by its own seed's teacher.

Latency: the shipped artifact's p50/p95 and the teacher's p50 in the same runtime, timed interleaved in one
process by the build (``latency_vs_teacher``: the teacher's fp32 export in the student's format); the on-device
tokenize time is the runner's own (``preprocess.ms``). Host load is recorded; on a host busier than ``QUIET_LOAD``
the whole verdict reads "invalid: host busy" (``_provenance.judged``): accuracy does not depend on load, the
latencies do. As a seed read back from an earlier build was timed then, each row keeps the load its build timed at
(``timing_load``, the report's ``measured_on``), and ``timings_on_a_quiet_host`` needs every one under it.

Resumable: each seed builds into ``--cache-dir/text_kd/<recipe hash>/seed<S>``; a seed whose report.json is there
is read, not rebuilt, and a killed build resumes from its checkpoints. The results file is rewritten after every
seed (verdict "incomplete: k/n seeds" until all have finished).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from _paths import shared_dataset  # noqa: E402
from _provenance import Recorder, add_quick_and_out, parse_quick, stamped  # noqa: E402
from _quick import onnx_only_target  # noqa: E402

from edgekd.api import BuildOptions, build  # noqa: E402
from edgekd.io import read_json_object, write_json  # noqa: E402
from edgekd.stages.context import DEFAULT_CACHE  # noqa: E402
from edgekd.targets import load_target  # noqa: E402

NAME = "text_kd"
ROWS = ("seeds", "summary", "progress")  # verdict(*[doc[key] for key in ROWS])
QUICK = {"seeds": 1, "max_train": 0, "epochs": 1, "teacher_epochs": 1, "runs": 10, "warmup": 2, "quick_data": True}
QUIET_LOAD = 2.5  # 1-minute load average under which latencies compare (2 cores, the build's own threads included)
METHODS = ("teacher", "kd", "alone", "int8")
# All of SST-2 and the build's own epochs by default: on a quiet 2-core EPYC a seed's build takes ~15 min (the default
# text teacher ~12 of them). A smaller cut (--max-train 10000 --teacher-epochs 4) gave a teacher at 0.63-0.72, below
# the student trained alone, so it measures a weak teacher rather than distillation.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_dataset("text/sst2")), help="SST-2 folder (train.csv, test.csv)")
    p.add_argument("--target", default="rpi4", help="the build's target (default rpi4: TFLite int8)")
    p.add_argument("--seeds", type=int, default=3, help="builds with seeds 0..N-1 (default 3)")
    p.add_argument("--max-train", type=int, default=0,
                   help="train+val rows drawn from the training set (default 0: all 67,349)")
    p.add_argument("--epochs", type=int, help="student epochs (default: the build's for this much data)")
    p.add_argument("--teacher-epochs", type=int, default=0,
                   help="teacher epochs (default 0: the build's)")
    p.add_argument("--runs", type=int, default=200, help="timed runs per artifact (default 200, the build's)")
    p.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    p.add_argument("--cache-dir", default=str(ROOT / ".cache"), help="run directories per seed (resume)")
    p.add_argument("--teacher-cache", help=f"the build's teacher cache (default {DEFAULT_CACHE}; --quick: CACHE_DIR)")
    p.set_defaults(quick_data=False)
    add_quick_and_out(p, QUICK)
    args = parse_quick(p, argv, NAME, QUICK)
    args.max_train, args.teacher_epochs = args.max_train or None, args.teacher_epochs or None
    args.teacher_cache = args.teacher_cache or (args.cache_dir if args.quick else str(DEFAULT_CACHE))
    return args


# ------------------------------------------------------------------------------------------------ data and builds
def tiny_sst(folder: Path) -> Path:
    """A small two-class sentiment table (train.csv, test.csv) for --quick: the plumbing, not the number."""
    good, bad = ["good", "great", "wonderful", "moving", "fun"], ["bad", "dull", "awful", "boring", "flat"]
    filler = ["the", "film", "is", "a", "plot", "and", "quite", "really", "story", "acting"]
    rng = random.Random(0)

    def rows(n: int) -> list[tuple[str, str]]:
        out = []
        for i in range(n):
            label = "positive" if i % 2 else "negative"
            words = rng.sample(filler, 4) + [rng.choice(good if i % 2 else bad)]
            rng.shuffle(words)
            out.append((" ".join(words), label))
        return out

    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.csv", 240), ("test.csv", 60)):
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("text", "label"), *rows(n)])
    return folder


def recipe_hash(args: argparse.Namespace, target: str) -> str:
    """Everything that shapes a seed's build (never the commit): names the run directories."""
    recipe = {k: getattr(args, k) for k in ("data", "max_train", "epochs", "teacher_epochs", "runs", "warmup")}
    return hashlib.sha256(json.dumps({**recipe, "target": target}, sort_keys=True).encode()).hexdigest()[:16]


def build_seed(args: argparse.Namespace, target: str, out: Path, seed: int, say) -> dict:
    """Seed ``seed``'s report: read from ``out`` when that build finished earlier, else built now."""
    report_file = out / "report.json"
    if report_file.is_file():
        say(f"seed {seed}: finished earlier ({report_file}): read, not rebuilt")
        return read_json_object(report_file, "a finished seed's build report",
                                f"remove {out} to rebuild that seed")
    options = BuildOptions(target=target, data=args.data, text_column="text", label_column="label", baseline=True,
                           seed=seed, max_train=args.max_train, epochs=args.epochs, teacher_epochs=args.teacher_epochs,
                           runs=args.runs, warmup=args.warmup, out=out, progress=False,
                           teacher_cache=Path(args.teacher_cache), log=say)
    return build(options).report


# ------------------------------------------------------------------------------------------------ rows
def _p(latency: dict | None, key: str) -> float | None:
    return None if latency is None else latency.get(key)


def seed_row(seed: int, report: dict) -> dict:
    """One seed's numbers from its build report: accuracies, the shipped artifact, its fp32 twin, the teacher."""
    shipped = next(a for a in report["artifacts"] if a["shipped"])
    twin = next((a for a in report["artifacts"] if a["format"] == shipped["format"] and a["precision"] == "fp32"
                 and a["reference"] == "student"), None)
    student, teacher, versus = report["student"], report["teacher"], shipped.get("latency_vs_teacher")
    fp32 = twin["accuracy"] if twin else student["accuracy_before_compression"]
    return {
        "seed": seed, "student": f"{student['family']} {student['config']}", "student_params": student["params"],
        "student_macs": student["macs"], "teacher_arch": teacher["arch"], "teacher_macs": teacher["macs"],
        "teacher": teacher["accuracy"], "kd": student["accuracy_before_compression"],
        "alone": student["accuracy_trained_alone"], "int8": shipped["accuracy"],
        "shipped_val_accuracy": shipped.get("val_accuracy"),
        "loss_weights": student["distillation"].get("loss_weights"),
        "shipped": shipped["path"], "format": shipped["format"], "precision": shipped["precision"],
        "precision_detail": shipped.get("precision_detail"), "fp32_artifact_accuracy": fp32,
        "int8_drop_points": None if fp32 is None else round(100 * (fp32 - shipped["accuracy"]), 3),
        "student_p50_ms": _p(shipped["latency_ms"], "p50"), "student_p95_ms": _p(shipped["latency_ms"], "p95"),
        "teacher_p50_ms_same_runtime": versus["teacher_p50_ms"] if versus else shipped.get(
            "teacher_p50_ms_same_runtime"),
        "student_p50_ms_interleaved": versus["p50_ms"] if versus else None,
        "student_over_teacher_latency": versus["ratio"] if versus else None,
        "latency_how": versus["how"] if versus else "teacher_p50_ms_same_runtime (separate runs)",
        "tokenize_p50_ms": (shipped.get("preprocess") or {}).get("ms", {}).get("p50"),
        "build_time_s": report.get("build_time_s"),
        "timing_load": (report.get("measured_on", {}).get("load_average") or [None])[0],
    }


def mean_std(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarize(rows: list[dict]) -> dict:
    """Per method mean and std over seeds; KD minus alone paired by seed; the int8 drop and the latency ratio."""
    out: dict[str, Any] = {m: mean_std([r[m] for r in rows]) for m in METHODS}
    out["kd_minus_alone_points"] = mean_std([100 * (r["kd"] - r["alone"]) for r in rows])
    out["int8_drop_points"] = mean_std([r["int8_drop_points"] for r in rows])
    out["student_over_teacher_latency"] = mean_std([r["student_over_teacher_latency"] for r in rows])
    out["tokenize_p50_ms"] = mean_std([r["tokenize_p50_ms"] for r in rows])
    return out


def verdict(seeds: list[dict], summary: dict, progress: dict) -> dict | str:
    """From the rows: KD at least alone minus the larger seed spread; every seed's int8 drop within the target's
    ``max_quantization_drop``; the student faster than its teacher in the same runtime on every seed."""
    if progress["done"] < progress["expected"]:
        return f"incomplete: {progress['done']}/{progress['expected']} seeds"
    spread = 100 * max(summary["kd"]["std"], summary["alone"]["std"])
    gain = summary["kd_minus_alone_points"]["mean"]
    limit = progress["max_quantization_drop"]
    drops = [r["int8_drop_points"] for r in seeds]
    ratios = [r["student_over_teacher_latency"] for r in seeds]
    if None in ratios:  # no interleaved timing: the separate runs' p50s
        ratios = [r["student_p50_ms"] / r["teacher_p50_ms_same_runtime"] if r["teacher_p50_ms_same_runtime"]
                  else None for r in seeds]
    return {
        "kd_minus_alone_points": gain, "spread_points": spread, "kd_not_worse_than_alone": gain >= -spread,
        "kd_beats_alone_beyond_spread": gain > spread,
        "int8_drop_points_max": max(drops) if None not in drops else None,
        "int8_drop_limit_points": None if limit is None else 100 * limit,
        "int8_within_contract": None if limit is None or None in drops else max(drops) <= 100 * limit,
        "student_faster_than_teacher": None if None in ratios else all(r < 1 for r in ratios),
        "student_over_teacher_latency_max": None if None in ratios else max(ratios),
        "timings_on_a_quiet_host": all(r["timing_load"] is not None and r["timing_load"] <= QUIET_LOAD
                                       for r in seeds),
    }


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = list(range(args.seeds))
    recorder = Recorder(quick=args.quick, seeds=seeds, quiet_load=QUIET_LOAD)
    t0 = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {message}", flush=True)

    cache = Path(args.cache_dir) / NAME
    if args.quick_data:
        args.data = str(tiny_sst(cache / "tiny_sst"))
    if not Path(args.data).exists():
        print(f"error: data {args.data} not found; pass --data (SST-2: ../shared/datasets/text/sst2)",
              file=sys.stderr)
        return 2
    target = onnx_only_target(args.target, cache / "targets") if args.quick else args.target
    runs_dir = cache / recipe_hash(args, target)
    limit = load_target(target).budgets.max_quantization_drop
    context = {"dataset": Path(args.data).name, "target": target, "runs_dir": str(runs_dir),
               "settings": {k: v for k, v in vars(args).items()}, "choices": choices(args)}
    rows: list[dict] = []
    for seed in seeds:
        say(f"seed {seed}: edgekd build --target {target} --data {args.data} --text-column text --label-column "
            f"label --baseline --seed {seed}")
        rows.append(seed_row(seed, build_seed(args, target, runs_dir / f"seed{seed}", seed, say)))
        say(f"seed {seed}: " + ", ".join(f"{m} {rows[-1][m]:.4f}" for m in METHODS))
        doc = {**context, "seeds": rows, "summary": summarize(rows),
               "progress": {"done": len(rows), "expected": len(seeds), "max_quantization_drop": limit}}
        doc = stamped(doc, verdict(*[doc[k] for k in ROWS]), recorder.finish())
        write_json(args.out, doc)
    say(f"verdict: {json.dumps(doc['verdict'])}")
    say(f"wrote {args.out}")
    return 0


def choices(args: argparse.Namespace) -> dict:
    """What every results file states about how it was measured."""
    return {
        "data": f"{args.data}: the build's train/val split of the training rows"
                f"{f' (first {args.max_train} drawn)' if args.max_train else ''}; test scored once per model",
        "teacher": "the build's default text teacher, trained per seed (its cache key holds the seed)",
        "selection": "best epoch and student by the build, on validation; never on test",
        "latency": "shipped artifact vs the teacher's fp32 export in the same runtime, interleaved in one process "
                   f"by the build ({args.runs} runs, {args.warmup} warm-up); tokenize time from the runner",
    }


if __name__ == "__main__":
    raise SystemExit(main())
