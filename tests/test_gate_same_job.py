"""`edgekd gate --baseline-run`: the baseline's artifact re-measured in this job, interleaved with the candidate.

The stand-in is a real runner format (a session plugin, verified by sha256 like any) whose model busy-waits ``ms``
times a speed factor drawn once per process: a machine whose speed shifts between invocations, as a CI runner's
does (frequency, memory layout, neighbours). Two stored runs of the same artifact then differ by that factor, which
the blocks of either run cannot see; timed interleaved in the same processes, the factor cancels.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from factories import artifact_row, make_report

from edgekd.bench import run_local
from edgekd.cli import main
from edgekd.gate_stats import compare_quantile
from edgekd.io import sha256_file, write_json

STANDIN = '''
"""Stand-in model: busy-waits ms x this process's speed factor (the next one of EDGEKD_STANDIN_FACTORS)."""
import json
import os
import time

import numpy as np
from edgekd_runner import Session, register_session


def _process_factor():
    with open(os.environ["EDGEKD_STANDIN_COUNTER"], "a+b") as fh:  # one byte per process: its index
        fh.write(b".")
        fh.flush()
        index = fh.tell() - 1
    factors = [float(f) for f in os.environ["EDGEKD_STANDIN_FACTORS"].split(",")]
    return factors[index % len(factors)]


FACTOR = _process_factor()


@register_session
class StandinSession(Session):
    format = "standin"
    suffixes = (".standin",)
    runtime = "busy-wait"
    install_hint = "nothing to install"

    def __init__(self, path, threads, precision=None):
        with open(path, encoding="utf-8") as fh:
            spec = json.load(fh)
        self.ns, self.classes = spec["ms"] * FACTOR * 1e6, spec["classes"]
        self.input_shape = [-1, spec["features"]]
        self.runtime_version = "1"

    def run(self, x):
        end = time.perf_counter_ns() + self.ns * len(x)
        while time.perf_counter_ns() < end:
            pass
        return np.repeat(np.arange(self.classes, dtype=np.float32)[None], len(x), axis=0)
'''
FEATURES, CLASSES = 4, 3
TIMING = {"runs": 60, "warmup": 5, "threads": 1, "memory": False}


def make_standin_run(directory: Path, ms: float) -> Path:
    """A run directory as `edgekd build` writes it, around one stand-in artifact of ``ms`` per inference."""
    directory.mkdir(parents=True)
    artifact, plugin = directory / "model.standin", directory / "standin_session.py"
    artifact.write_text(json.dumps({"ms": ms, "classes": CLASSES, "features": FEATURES}))
    plugin.write_text(STANDIN)
    rng = np.random.default_rng(0)
    np.savez(directory / "eval.npz", x=rng.normal(size=(16, FEATURES)).astype(np.float32),
             y=(np.arange(16) % CLASSES).astype(np.int64))
    eval_inputs = {"path": "eval.npz", "sha256": sha256_file(directory / "eval.npz")}
    sha = sha256_file(artifact)
    write_json(directory / "manifest.json", {
        "edgekd_version": "0.1.0", "target": "x86-cpu", "eval_inputs": eval_inputs,
        "artifacts": [{"path": artifact.name, "format": "standin", "precision": "fp32", "role": "student",
                       "sha256": sha, "files": [{"path": artifact.name, "sha256": sha}]}],
        "session_plugins": [{"format": "standin", "path": plugin.name, "sha256": sha256_file(plugin)}]})
    row = artifact_row(artifact.name, "standin", "fp32", size=artifact.stat().st_size, sha256=sha,
                       teacher_p50_ms_same_runtime=100 * ms)
    # measured off the device: its latency budget is not this test's business (a busy host fails p95)
    write_json(directory / "report.json", make_report(artifacts=[row], eval_inputs={**eval_inputs, "samples": 16},
                                                      on_device=False))
    return directory


def measured(run: Path) -> Path:
    """The run's report with the artifact's latency measured now by the runner, in one process (a stored number)."""
    report = json.loads((run / "report.json").read_text())
    row = report["artifacts"][0]
    lat = run_local(run / row["path"], run / "eval.npz", plugins=[run / "standin_session.py"], **TIMING)["latency_ms"]
    row["latency_ms"] = {k: lat[k] for k in ("p50", "p90", "p95", "p99", "mean", "std")}
    row["latency_ms_detail"] = lat
    path = run.parent / f"{run.name}-stored.json"
    write_json(path, report)
    return path


@pytest.fixture
def shifting_machine(tmp_path, monkeypatch) -> list[float]:
    """Per-process speed factors, random but seeded; the first two processes (the two stored runs) 1.45x apart."""
    factors = [1.0, 1.45] + list(np.round(np.random.default_rng(3).uniform(0.6, 1.6, 30), 3))
    monkeypatch.setenv("EDGEKD_STANDIN_FACTORS", ",".join(str(f) for f in factors))
    monkeypatch.setenv("EDGEKD_STANDIN_COUNTER", str(tmp_path / "processes"))
    return factors


def gate(capsys, *args: str) -> tuple[int, str]:
    code = main(["gate", *args, "--target", "x86-cpu"])
    return code, capsys.readouterr().out


def status(out: str, metric: str) -> str:
    line = next(line for line in out.split("regressions vs", 1)[1].splitlines() if line.startswith(metric + " "))
    return next(c for c in line.split() if c in ("pass", "FAIL", "UNVERIFIED"))


def test_same_job_passes_the_unchanged_artifact_where_a_stored_number_would_fail_it(tmp_path, shifting_machine,
                                                                                    capsys):
    base, current = make_standin_run(tmp_path / "base", 0.3), make_standin_run(tmp_path / "current", 0.3)
    stored_base, stored_current = measured(base), measured(current)  # processes 1 and 2 of the machine
    rows = [json.loads(p.read_text())["artifacts"][0]["latency_ms_detail"] for p in (stored_base, stored_current)]
    samples = [np.asarray(r["samples_ms"]) for r in rows]
    # The stored-number check on the blocks of each run alone: 1.45x apart, beyond its MDR, in every block: fail.
    within_run = compare_quantile(samples[0], rows[0]["blocks"], samples[1], rows[1]["blocks"], 50.0)
    assert within_run.ratio > 1.25 and within_run.verdict(10) == "fail", within_run
    # The gate never fails a stored number it cannot judge: one process per run, between-process variance unknown.
    code, out = gate(capsys, str(stored_current), "--baseline", str(stored_base))
    assert status(out, "latency_ms_p50") == "UNVERIFIED" and "timed in one process" in out and code == 0, out
    # Same job: both artifacts in each of 4 fresh processes (speed factors ~U(0.6, 1.6)): the factor cancels.
    code, out = gate(capsys, str(current / "report.json"), "--baseline-run", str(base), "--processes", "4")
    assert code == 0, out
    assert status(out, "latency_ms_p5") == "pass" and status(out, "latency_ms_p50") == "pass", out
    assert "interleaved with the baseline's model.standin in 4 fresh processes" in out
    assert "FAIL" not in out


def test_same_job_fails_a_slower_artifact_and_says_by_how_much(tmp_path, shifting_machine, capsys):
    base, slower = make_standin_run(tmp_path / "base", 0.3), make_standin_run(tmp_path / "slower", 0.6)
    code, out = gate(capsys, str(slower / "report.json"), "--baseline-run", str(base), "--processes", "4")
    assert code == 1 and "regression(s) vs baseline" in out, out
    assert status(out, "latency_ms_p50") == "FAIL"
    assert "slower by more than the allowed 10 %" in out


def test_a_baseline_run_is_verified_before_anything_runs(tmp_path, shifting_machine, capsys):
    base, current = make_standin_run(tmp_path / "base", 0.3), make_standin_run(tmp_path / "current", 0.3)
    (base / "model.standin").write_text(json.dumps({"ms": 0.01, "classes": CLASSES, "features": FEATURES}))
    code, out = main(["gate", str(current / "report.json"), "--baseline-run", str(base)]), capsys.readouterr()
    assert code == 2 and "sha256 mismatch for model.standin" in out.err and "Traceback" not in out.err
    assert (tmp_path / "processes").stat().st_size == 1  # refused in the first runner process, before any timing

    for args, message in (([str(tmp_path / "nowhere")], "baseline run directory not found"),
                          ([str(tmp_path)], "has no report.json"),
                          ([str(base), "--baseline", str(current / "report.json")], "cannot be combined")):
        code = main(["gate", str(current / "report.json"), "--baseline-run", *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, err
    with pytest.raises(SystemExit) as exc:
        main(["gate", str(current / "report.json"), "--baseline-run", str(base), "--processes", "2"])
    assert exc.value.code == 2 and "the interval needs 3 processes" in capsys.readouterr().err


def test_same_job_rows_need_three_processes():
    from edgekd.gate import interleaved_regressions

    one = {"first": "artifact", "ratios": [1.0], "samples_ms": [1.0] * 20, "versus_samples_ms": [1.0] * 20}
    rows = interleaved_regressions("m.onnx", {"artifact": "m.onnx", "processes": [one, copy.deepcopy(one)]}, 10)
    assert {r.status for r in rows} == {"unverified"} and "needs at least 3" in rows[0].note


def test_the_ci_example_gates_against_the_last_accepted_run_with_flags_that_exist():
    import argparse
    import re

    import yaml

    from edgekd.cli.gate import register

    example = Path(__file__).resolve().parents[1] / "examples" / "github-actions.yml"
    steps = yaml.safe_load(example.read_text())["jobs"]["build-bench-gate"]["steps"]
    scripts = [s.get("run", "") for s in steps]
    gate_lines = [line for script in scripts for line in script.replace("\\\n", " ").splitlines()
                  if "edgekd gate" in line]
    gate_step = next(s["run"] for s in steps if s.get("name") == "Gate")
    assert "BASELINE_ARGS=(--baseline-run baseline-run)" in gate_step and "--baseline " not in gate_step
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    known = {o for a in parser._subparsers._group_actions[0].choices["gate"]._actions for o in a.option_strings}
    used = {flag for line in gate_lines for flag in re.findall(r"(--[a-z][a-z-]+)", line)}
    assert used <= known, used - known
    assert any('cp -a "$RUN_DIR" baseline-run' in script for script in scripts)  # main's build is kept as is
