"""The same-job baseline (``edgekd gate --baseline-run OLD_RUN_DIR``): the last accepted build's artifacts
re-measured now, each interleaved with the candidate's in one runner process, over several fresh processes.

A stored baseline number was measured in another job, in another process, on the machine of that moment: two
such runs of the *same* artifact differ by more than the noise either run can see in itself (a quiet 2-core Xeon
failed the same artifact in 5 of 20 repeats that way). Timed here, in the same processes as the candidate (the
runner's ``--versus``; which one goes first alternates between processes), the machine cancels in the ratio and
what remains, process to process, is measured (``edgekd.gate_stats.compare_interleaved`` judges it).

Nothing runs unverified: the runner checks every file of both artifacts against the manifest beside it, and each
sha256 it verified must be the one its report records.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from edgekd.bench import run_local
from edgekd.errors import EdgekdError
from edgekd.gate import artifact_key, check_report, load_report
from edgekd.io import read_json_object
from edgekd.schema import ArtifactRow, Report, validate

DEFAULT_PROCESSES = 6  # even: each artifact goes first in half of them
MAX_PROCESSES = 64  # the runner's cap


def load_baseline_run(directory: str | Path, target: str) -> tuple[Path, Report]:
    """The baseline run directory and its validated report, for ``target``; every way it is unusable is exit 2."""
    run = Path(directory)
    fix = "pass the run directory of the last accepted build (it holds report.json, manifest.json and the artifacts)"
    if not run.is_dir():
        raise EdgekdError(f"baseline run directory not found: {run}", fix)
    for name in ("report.json", "manifest.json"):
        if not (run / name).is_file():
            raise EdgekdError(f"baseline run {run} has no {name}: it is not an edgekd run directory", fix)
    report = load_report(run / "report.json", "baseline")
    return run, check_report(report, f"baseline {run / 'report.json'}", expected_target=target)


def _plugins(run_dir: Path) -> list[Path]:
    """The session plugins the run's manifest lists (the runner imports each only if its sha256 matches)."""
    manifest = read_json_object(run_dir / "manifest.json", "manifest", "rebuild the run with `edgekd build`")
    return [run_dir / p["path"] for p in manifest.get("session_plugins") or []
            if isinstance(p, dict) and isinstance(p.get("path"), str) and Path(p["path"]).name == p["path"]]


def _check_verified(side: str, record: dict[str, Any], row: ArtifactRow) -> None:
    if not record.get("sha256_verified") or record.get("sha256") != row.sha256:
        raise EdgekdError(f"the {side} artifact {row.path} is not the one its report.json describes (the runner "
                          f"verified sha256 {str(record.get('sha256'))[:12]}..., the report records "
                          f"{row.sha256[:12]}...)", "gate the run directories as `edgekd build` wrote them")


def measure_same_job(report_path: str | Path, report: Report, baseline_dir: Path,
                     baseline: Report, processes: int = DEFAULT_PROCESSES,
                     log: Any = None) -> dict[str, dict[str, Any]]:
    """Per shipped artifact with a counterpart in the baseline run: the runner's ``versus`` record of the two
    timed interleaved in ``processes`` fresh processes (``edgekd.gate.compare_to_baseline``'s ``same_job``)."""
    run_dir = Path(report_path).parent
    inputs = run_dir / report.eval_inputs.path
    if not inputs.is_file():
        raise EdgekdError(f"the run's eval inputs {inputs} are missing: the baseline is timed on them",
                          "gate the run directory as `edgekd build` wrote it")
    threads = report.measured_on.threads
    say = log or (lambda message: print(message, file=sys.stderr))
    by_key = {artifact_key(a): a for a in baseline.artifacts}
    out: dict[str, dict[str, Any]] = {}
    for row in report.shipped:
        old = by_key.get(artifact_key(row))
        if old is None:
            continue  # compare_to_baseline says so in its row
        say(f"timing {row.path} against the baseline's in {processes} fresh processes ({threads} thread(s))")
        result = run_local(run_dir / row.path, inputs, threads=threads, memory=False, plugins=_plugins(run_dir),
                           versus=baseline_dir / old.path, processes=processes)
        validate("runner_result", result, f"the runner's result for {row.path}", "report this as a bug")
        _check_verified("current", result, row)
        _check_verified("baseline", result["versus"], old)
        out[row.path] = result["versus"]
    return out
