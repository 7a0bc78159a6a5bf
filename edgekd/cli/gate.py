"""``edgekd gate``: budgets and baseline regressions of a report, for people and CI (JUnit, Markdown)."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError
from edgekd.gate import (
    DEFAULT_MAX_ACCURACY_DROP,
    DEFAULT_MAX_REGRESSION_PCT,
    FAIL,
    PASS,
    RegressionCheck,
    check_report,
    eval_labels,
    evaluate_gate,
    format_junit,
    format_markdown,
    format_table,
    load_report,
    update_baseline,
)
from edgekd.gate_same_job import DEFAULT_PROCESSES, MAX_PROCESSES, load_baseline_run, measure_same_job
from edgekd.io import write_text
from edgekd.schema import Report
from edgekd.targets import load_target


def cmd_gate(args: argparse.Namespace) -> int:
    report = check_report(load_report(args.report), f"report {args.report}")
    target_spec = args.target or report.target_path or report.target
    if not args.target and not os.path.exists(str(target_spec)):
        target_spec = report.target
    target = load_target(target_spec)
    check_report(report, f"report {args.report}", expected_target=target.name)

    if args.baseline_run:
        return _gate_against_run(args, report, target)
    baseline = None
    if args.update_baseline and not args.baseline:
        raise EdgekdError("--update-baseline needs --baseline FILE (where to write it)",
                          "e.g. edgekd gate runs/x86-cpu/report.json --baseline baseline.json --update-baseline")
    if args.baseline and (Path(args.baseline).exists() or not args.update_baseline):
        if not Path(args.baseline).exists():
            raise EdgekdError(f"baseline not found: {args.baseline}",
                              "create it from an accepted report with --update-baseline")
        baseline = check_report(load_report(args.baseline, "baseline"), f"baseline {args.baseline}",
                                expected_target=target.name)

    result = evaluate_gate(report, target, strict=args.strict, baseline=baseline,
                           max_regression_pct=args.max_regression, max_accuracy_drop=args.max_accuracy_drop,
                           baseline_label=str(args.baseline),
                           labels=eval_labels(args.report, report) if baseline is not None else None)
    return _write_outputs(args, result, target.name)


def _gate_against_run(args: argparse.Namespace, report: Report, target: Any) -> int:
    """--baseline-run: the baseline's artifacts re-measured in this job, interleaved with the report's."""
    if args.baseline or args.update_baseline:
        raise EdgekdError("--baseline-run cannot be combined with --baseline or --update-baseline",
                          "gate against one baseline; to accept a build, keep its run directory as the next "
                          "--baseline-run (examples/github-actions.yml does)")
    run_dir, baseline = load_baseline_run(args.baseline_run, target.name)
    same_job = measure_same_job(args.report, report, run_dir, baseline, args.processes)
    result = evaluate_gate(report, target, strict=args.strict, baseline=baseline,
                           max_regression_pct=args.max_regression, max_accuracy_drop=args.max_accuracy_drop,
                           baseline_label=f"{run_dir} (re-measured in this job)",
                           labels=eval_labels(args.report, report), same_job=same_job)
    return _write_outputs(args, result, target.name)


def _write_outputs(args: argparse.Namespace, result: Any, target: str) -> int:
    """Print the table, write JUnit / Markdown / the step summary, accept the baseline if asked; the exit code."""
    if args.update_baseline and result.regressions:
        # Accepting a new baseline on purpose: show what changes, but a slower baseline is the point.
        result.regressions = [RegressionCheck(**{**asdict(r), "status": PASS if r.status == FAIL else r.status,
                                                 "note": ("accepted (--update-baseline); " + r.note).rstrip("; ")})
                              for r in result.regressions]
    print(format_table(result))
    if args.junit:
        write_text(args.junit, format_junit(result, target))
    summary = format_markdown(result, target)
    if args.summary:
        write_text(args.summary, summary)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(summary + "\n")
    if args.update_baseline:
        if not result.passed:
            print(f"\nbaseline NOT updated: the report fails its budgets ({args.baseline} unchanged)")
        else:
            update_baseline(args.report, args.baseline)
            print(f"\nbaseline updated: {args.report} -> {args.baseline}")
    return 0 if result.passed else 1


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got '{text}'")
    return value


def _processes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if not 3 <= value <= MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"must be 3..{MAX_PROCESSES} (the interval needs 3 processes), got {value}")
    return value


def register(sub: Any) -> None:
    p = sub.add_parser("gate", help="check a report against its target's budgets and a baseline (exit 1 on failure)",
                       description="Exit codes: 0 all checks pass, 1 a budget or regression check failed, 2 bad input.")
    p.add_argument("report", help="report.json")
    p.add_argument("--target", help="target name or YAML path (default: the report's target)")
    p.add_argument("--baseline-run", metavar="RUN_DIR",
                   help="the last accepted build's run directory: its artifacts are verified (sha256) and timed "
                        "again here, interleaved with the report's in fresh processes, so machine drift cancels "
                        "(the recommended baseline)")
    p.add_argument("--processes", type=_processes, default=DEFAULT_PROCESSES, metavar="N",
                   help=f"fresh runner processes for --baseline-run (default {DEFAULT_PROCESSES}, at least 3)")
    p.add_argument("--baseline", help="a stored baseline report.json to check for regressions against (numbers "
                                      "from another job: its noise includes the between-process variance, so it "
                                      "detects less than --baseline-run)")
    p.add_argument("--max-regression", type=_non_negative, default=DEFAULT_MAX_REGRESSION_PCT, metavar="PCT",
                   help="allowed increase of latency p5/p50/p95, peak memory and size vs the baseline, in %% "
                        f"(default {DEFAULT_MAX_REGRESSION_PCT:g}); a latency change must also exceed the two runs' "
                        "minimum detectable regression (MDR), and a row whose MDR exceeds it is 'unverifiable'")
    p.add_argument("--max-accuracy-drop", type=_non_negative, default=DEFAULT_MAX_ACCURACY_DROP, metavar="FRACTION",
                   help=f"allowed accuracy drop vs the baseline (default {DEFAULT_MAX_ACCURACY_DROP:g} = 1 point)")
    p.add_argument("--strict", action="store_true", help="fail checks that could not be verified (device budgets "
                                                         "measured off the target device, refused baseline "
                                                         "comparisons, regressions unverifiable at the noise)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML (one test case per check)")
    p.add_argument("--summary", metavar="FILE", help="write a Markdown summary (also appended to "
                                                     "$GITHUB_STEP_SUMMARY when set)")
    p.add_argument("--update-baseline", action="store_true",
                   help="accept this report as the new --baseline (written atomically when the budgets pass)")
    p.set_defaults(func=cmd_gate)
