"""The CI gate on a synthetic report (the structure `edgekd build` writes): budgets, baselines, CI outputs, bad input.

Everything is made in the test with seeded numpy, so the suite is fast and never depends on runs/.
"""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from factories import LABELS, N_TEST, make_report, predictions

from edgekd.cli import main
from edgekd.errors import EdgekdError
from edgekd.gate import FAIL, PASS, UNVERIFIED, check_report, compare_to_baseline, eval_labels, evaluate_gate
from edgekd.schema import REPORT_SCHEMA_VERSION
from edgekd.targets import load_target


@pytest.fixture
def target_file(tmp_path: Path) -> Path:
    """A copy of the shipped x86-cpu target that a test can tighten."""
    raw = yaml.safe_load(open(load_target("x86-cpu").path, encoding="utf-8"))
    path = tmp_path / "x86-cpu.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def write(path: Path, obj: object) -> str:
    path.write_text(json.dumps(obj))
    return str(path)


def gate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["gate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def rows(text: str) -> list[list[str]]:
    """The budget table's rows (name, artifact, ..., status) from the gate's printed output."""
    lines = text.split("\n\n")[0].splitlines()[2:]
    return [line.split() for line in lines]


# ------------------------------------------------------------------------------------------------ budgets
def test_real_structure_passes(tmp_path, target_file, capsys):
    code, out, _ = gate(capsys, write(tmp_path / "r.json", make_report()), "--target", str(target_file))
    assert code == 0, out
    assert "gate PASSED" in out
    names = {r[0] for r in rows(out)}
    assert names == {"params", "macs", "model_size_kb", "min_accuracy_ratio", "max_quantization_drop",
                     "max_latency_ratio_to_teacher", "latency_ms_p95", "peak_memory_mb"}
    assert all(r[-1] == "pass" for r in rows(out))
    assert "model_fp32.onnx" not in out  # not shipped: not gated


def _tighten(report: dict) -> dict[str, tuple[str, str, float]]:
    """Per budget: (section, field, value just past the worst shipped measurement), so exactly one check fails."""
    shipped = [a for a in report["artifacts"] if a["shipped"]]
    s, t = report["student"], report["teacher"]
    eps = 1e-6
    return {
        "params": ("student_budget", "max_params", s["params"] - 1),
        "macs": ("student_budget", "max_macs", s["macs"] - 1),
        "model_size_kb": ("budgets", "model_size_kb", max(a["size_bytes"] for a in shipped) / 1024 * (1 - eps)),
        "min_accuracy_ratio": ("budgets", "min_accuracy_ratio",
                               min(a["accuracy"] for a in shipped) / t["accuracy"] * (1 + eps)),
        "max_quantization_drop": ("budgets", "max_quantization_drop",
                                  max(s["accuracy"] - a["accuracy"] for a in shipped) * (1 - eps)),
        "max_latency_ratio_to_teacher": ("budgets", "max_latency_ratio_to_teacher", max(
            a["latency_ms"]["p50"] / a["teacher_p50_ms_same_runtime"] for a in shipped) * (1 - eps)),
        "latency_ms_p95": ("budgets", "latency_ms_p95", max(a["latency_ms"]["p95"] for a in shipped) * (1 - eps)),
        "peak_memory_mb": ("budgets", "peak_memory_mb", max(a["peak_memory_mb"] for a in shipped) * (1 - eps)),
    }


@pytest.mark.parametrize("budget", list(_tighten(make_report())))
def test_each_budget_just_past_its_measurement_fails_alone(budget, tmp_path, target_file, capsys):
    report = make_report()
    section, key, value = _tighten(report)[budget]
    raw = yaml.safe_load(target_file.read_text())
    raw[section][key] = value
    target_file.write_text(yaml.safe_dump(raw))
    junit = tmp_path / "gate.xml"
    code, out, _ = gate(capsys, write(tmp_path / "r.json", report), "--target", str(target_file),
                        "--junit", str(junit))
    assert code == 1, out
    failed = [r for r in rows(out) if r[-1] == "FAIL"]
    assert len(failed) == 1 and failed[0][0] == budget, out
    assert "FAILED (1 budget(s) violated)" in out

    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == 1 and failures[0].get("name").startswith(budget + "[")
    assert root.get("failures") == "1" and int(root.get("tests")) == len(cases) == len(rows(out))


def test_device_budgets_unverified_off_device_fail_only_with_strict(tmp_path, target_file, capsys):
    raw = yaml.safe_load(target_file.read_text())
    raw["budgets"]["latency_ms_p95"] = 1e-4  # would fail if it counted
    target_file.write_text(yaml.safe_dump(raw))
    report = write(tmp_path / "r.json", make_report(on_device=False))
    junit = tmp_path / "gate.xml"
    code, out, _ = gate(capsys, report, "--target", str(target_file), "--junit", str(junit))
    assert code == 0, out
    unverified = [r for r in rows(out) if r[-1] == "UNVERIFIED"]
    assert {r[0] for r in unverified} == {"latency_ms_p95", "peak_memory_mb"} and len(unverified) == 4
    root = ET.parse(junit).getroot()
    assert root.get("skipped") == "4" and root.get("failures") == "0"

    code, out, _ = gate(capsys, report, "--target", str(target_file), "--strict", "--junit", str(junit))
    assert code == 1 and "FAIL (unverified, --strict)" in out
    assert ET.parse(junit).getroot().get("failures") == "4"


def device_result(report: dict, remote: str = "ci@box", sha256: str | None = None, **machine) -> dict:
    """A device_results[] entry as `edgekd bench --remote` merges it (an AVX2 x86 box unless told otherwise)."""
    return {"remote": remote, "measured_on": {"arch": "x86_64", "cpu": "AMD EPYC", "cpu_flags": ["avx2"], **machine},
            "artifacts": [{"path": a["path"], "sha256": sha256 or a["sha256"], "sha256_verified": True,
                           "latency_ms": {"p95": 0.2}, "peak_memory_mb": 80.0} for a in report["artifacts"]]}


def test_device_results_from_the_target_device_verify_device_budgets(tmp_path, target_file, capsys):
    report = make_report(on_device=False)
    report["device_results"] = [device_result(report)]
    code, out, _ = gate(capsys, write(tmp_path / "r.json", report), "--target", str(target_file), "--strict")
    assert code == 0, out
    assert not [r for r in rows(out) if r[-1] != "pass"]
    checks = json.loads(json.dumps(compare_gate(report, target_file)["checks"]))
    device = [c for c in checks if c["name"] == "latency_ms_p95"]
    assert all("ci@box is the target device (generic profile" in c["note"] for c in device), device


def compare_gate(report: dict, target_file: Path) -> dict:
    from edgekd.gate import evaluate_gate

    return evaluate_gate(report, load_target(target_file)).to_dict()


def test_device_results_with_another_sha256_never_reach_the_gate(tmp_path, target_file):
    """A tampered (or stale) device result cannot verify a budget: its artifact is not the report's."""
    report = make_report(on_device=False)
    report["device_results"] = [device_result(report, sha256="f" * 64)]
    checks = compare_gate(report, target_file)["checks"]
    device = [c for c in checks if c["device_bound"]]
    assert device and all(c["status"] == UNVERIFIED for c in device)
    assert all("ci@box ignored: sha256 ffffffffffff... is not the report's" in c["note"] for c in device)
    # and an unverified sha256 (runner --no-verify) neither
    report["device_results"] = [device_result(report)]
    for row in report["device_results"][0]["artifacts"]:
        row["sha256_verified"] = False
    assert all(c["status"] == UNVERIFIED for c in compare_gate(report, target_file)["checks"] if c["device_bound"])


def test_device_results_from_another_machine_stay_unverified(tmp_path, target_file):
    report = make_report(on_device=False)
    report["device_results"] = [device_result(report, arch="aarch64", cpu_flags=None)]
    device = [c for c in compare_gate(report, target_file)["checks"] if c["device_bound"]]
    assert all(c["status"] == UNVERIFIED and "arch aarch64 (target x86_64)" in c["note"] for c in device)


# ------------------------------------------------------------------------------------------------ baseline
def _status(out: str, metric: str, artifact: str) -> str:
    table = out.split("regressions vs", 1)[1]
    for line in table.splitlines():
        cells = line.split()
        if cells[:2] == [metric, artifact]:
            return next(c for c in cells[2:] if c in ("pass", "FAIL", "UNVERIFIED"))
    raise AssertionError(f"no row {metric} {artifact} in\n{out}")


def test_same_distribution_passes_against_baseline(tmp_path, target_file, capsys):
    base = write(tmp_path / "base.json", make_report(seed=0))
    for seed in (10, 20, 30):  # fresh re-measurements of the same artifact
        code, out, _ = gate(capsys, write(tmp_path / "r.json", make_report(seed=seed)), "--target",
                            str(target_file), "--baseline", base, "--strict")
        assert code == 0, out
        for metric in ("latency_ms_p5", "latency_ms_p50", "latency_ms_p95"):
            assert _status(out, metric, "model_int8.xml") == "pass"
    assert "MDR" in out


def test_busier_machine_is_noise_not_a_regression(tmp_path, target_file, capsys):
    """12 % interrupted samples instead of 1 % moves p95 into the interrupts: that's the machine, not the model."""
    base = write(tmp_path / "base.json", make_report(seed=0, interrupted=0.01))
    busy = make_report(seed=5, interrupted=0.12)
    assert busy["artifacts"][0]["latency_ms"]["p95"] > 5 * make_report()["artifacts"][0]["latency_ms"]["p95"]
    code, out, _ = gate(capsys, write(tmp_path / "r.json", busy), "--target", str(target_file), "--baseline", base)
    assert code == 0, out
    assert _status(out, "latency_ms_p95", "model_int8.xml") == "UNVERIFIED"  # says so instead of passing
    assert "p95 lies among the interrupted samples" in out
    assert _status(out, "latency_ms_p5", "model_int8.xml") == "pass"
    code, _, _ = gate(capsys, write(tmp_path / "r.json", busy), "--target", str(target_file), "--baseline", base,
                      "--strict")
    assert code == 1


def test_twice_as_slow_fails_against_baseline(tmp_path, target_file, capsys):
    base = write(tmp_path / "base.json", make_report(seed=0))
    junit = tmp_path / "gate.xml"
    code, out, _ = gate(capsys, write(tmp_path / "r.json", make_report(seed=7, slowdown=2.0, interrupted=0.05)),
                        "--target", str(target_file), "--baseline", base, "--junit", str(junit))
    assert code == 1, out
    assert "regression(s) vs baseline" in out
    for artifact in ("model_int8.xml", "model_int8.onnx"):
        assert _status(out, "latency_ms_p5", artifact) == "FAIL"
        assert _status(out, "latency_ms_p50", artifact) == "FAIL"
        assert _status(out, "model_size_kb", artifact) == "pass"
    assert ET.parse(junit).getroot().get("failures") == str(out.count(" FAIL "))


def test_latency_ratio_to_teacher_is_judged_on_the_interleaved_timing():
    """Separate runs say 1.06x the teacher (a slow moment for the student's run); timed interleaved it is 0.7x."""
    target = load_target("x86-cpu")
    report = make_report()
    for a in report["artifacts"]:
        a["teacher_p50_ms_same_runtime"] = a["latency_ms"]["p50"] / 1.06
    separate = [c for c in evaluate_gate(report, target).checks if c.name == "max_latency_ratio_to_teacher"]
    assert separate and all(c.status == FAIL and "separate runs" in c.note for c in separate)
    for a in report["artifacts"]:
        a["latency_vs_teacher"] = {"ratio": 0.7, "ratio_interval_95": (0.66, 0.74), "pairs": 20,
                                   "teacher_artifact": "teacher_fp32.xml", "p50_ms": 0.21, "teacher_p50_ms": 0.3,
                                   "how": "interleaved in one process"}
    check_report(report, "report")  # the schema knows the field
    paired = [c for c in evaluate_gate(report, target).checks if c.name == "max_latency_ratio_to_teacher"]
    assert all(c.status == PASS and c.measured == pytest.approx(0.7) for c in paired)
    assert "interleaved with teacher_fp32.xml" in paired[0].note and "0.66-0.74" in paired[0].note


def _row(checks: list, metric: str, artifact: str = "model_int8.xml"):
    return next(c for c in checks if c.metric == metric and c.artifact == artifact)


def test_small_change_passes_a_change_beyond_the_allowance_fails():
    """A quiet runner: MDR of a few %, so the rule is exactly 'slower than allowed' (15 % > 10 %, 5 % < 10 %)."""
    base = make_report(seed=0)
    checks = compare_to_baseline(make_report(seed=1, slowdown=1.05), base, max_regression_pct=10)
    assert all(c.status == PASS for c in checks), [c for c in checks if c.status != PASS]
    checks = compare_to_baseline(make_report(seed=1, slowdown=1.15), base, max_regression_pct=10)
    for metric in ("latency_ms_p5", "latency_ms_p50", "latency_ms_p95"):
        row = _row(checks, metric)
        assert row.status == FAIL and row.mdr_pct < 10 and row.ratio_interval[0] > 1.0, row
        assert "slower by more than the allowed 10 %" in row.note


def test_tail_only_regression_is_caught():
    """A tenth of the inferences 1.6x slower: median and floor unchanged, p95 moves, and only p95 fails."""
    base = make_report(seed=0)
    checks = compare_to_baseline(make_report(seed=1, timing={"tail": 0.10}), base, max_regression_pct=10)
    assert _row(checks, "latency_ms_p95").status == FAIL
    assert _row(checks, "latency_ms_p50").status == PASS and _row(checks, "latency_ms_p5").status == PASS


def test_noise_beyond_the_allowance_is_unverifiable_and_strict_fails_it(tmp_path, target_file, capsys):
    """Blocks of one run drift by ~15 %: a 10 % regression could not be told from that, so the row says so."""
    base = make_report(seed=0, timing={"block_drift": 0.15})
    checks = compare_to_baseline(make_report(seed=1, timing={"block_drift": 0.15}), base, max_regression_pct=10)
    p50 = _row(checks, "latency_ms_p50")
    assert p50.status == UNVERIFIED and p50.mdr_pct > 10
    assert p50.note == f"unverifiable at this noise (MDR {p50.mdr_pct:.1f} %)"
    drifting = make_report(seed=1, timing={"block_drift": 0.15})
    paths = (write(tmp_path / "base.json", base), write(tmp_path / "r.json", drifting))
    code, out, _ = gate(capsys, paths[1], "--target", str(target_file), "--baseline", paths[0])
    assert code == 0 and "unverifiable at this noise (MDR" in out
    code, out, _ = gate(capsys, paths[1], "--target", str(target_file), "--baseline", paths[0], "--strict")
    assert code == 1 and "FAIL (unverified, --strict)" in out
    # a regression far beyond that noise still fails
    much_slower = make_report(seed=1, timing={"block_drift": 0.15}, slowdown=3.0)
    checks = compare_to_baseline(much_slower, base, max_regression_pct=10)
    assert _row(checks, "latency_ms_p50").status == FAIL


# ------------------------------------------------------------------------------------------------ accuracy
def _with_predictions(report: dict, accuracy: float, seed: int) -> dict:
    report = copy.deepcopy(report)
    for a in report["artifacts"]:
        a["predictions"] = predictions(accuracy, seed)
        a["accuracy"] = float(np.mean(np.asarray(a["predictions"]) == LABELS))
    return report


def test_accuracy_is_judged_by_exact_mcnemar_on_the_same_inputs():
    base = _with_predictions(make_report(seed=0), 0.95, seed=1)
    worse = _with_predictions(make_report(seed=0), 0.90, seed=1)  # same draws: every new error is a b, no c
    row = _row(compare_to_baseline(worse, base, labels=LABELS), "accuracy")
    b = int(np.sum((np.asarray(base["artifacts"][0]["predictions"]) == LABELS)
                   & (np.asarray(worse["artifacts"][0]["predictions"]) != LABELS)))
    assert row.counts == {"b": b, "c": 0, "n": N_TEST} and b > 10
    assert row.p_value == pytest.approx(0.5 ** b) and row.status == FAIL
    assert f"exact McNemar p={0.5 ** b:.4g} (b={b}" in row.noise

    same = _row(compare_to_baseline(base, base, labels=LABELS), "accuracy")
    assert same.status == PASS and same.counts == {"b": 0, "c": 0, "n": N_TEST} and same.p_value == 1.0


def test_accuracy_drop_within_chance_is_unverifiable_not_failed():
    base = _with_predictions(make_report(), 0.95, seed=1)
    other = copy.deepcopy(base)
    for a in other["artifacts"]:  # 8 samples flip against, 2 for: a 1.5-point drop, p = 0.055
        pred = np.asarray(a["predictions"])
        right = np.flatnonzero(pred == LABELS)[:8]
        wrong = np.flatnonzero(pred != LABELS)[:2]
        pred[right] = (LABELS[right] + 1) % 10
        pred[wrong] = LABELS[wrong]
        a["predictions"] = pred.tolist()
    row = _row(compare_to_baseline(other, base, labels=LABELS), "accuracy")
    assert row.counts == {"b": 8, "c": 2, "n": N_TEST} and row.p_value == pytest.approx(56 / 1024)
    assert row.status == UNVERIFIED and "could be chance" in row.note


def test_accuracy_on_other_inputs_or_without_predictions_falls_back_clearly():
    base = make_report()
    other_inputs = copy.deepcopy(base)
    other_inputs["eval_inputs"]["sha256"] = "d" * 64
    row = _row(compare_to_baseline(other_inputs, base, labels=LABELS), "accuracy")
    assert row.status == UNVERIFIED and "different eval inputs" in row.note and row.p_value is None

    no_predictions = copy.deepcopy(base)
    for a in no_predictions["artifacts"]:
        del a["predictions"]
    row = _row(compare_to_baseline(make_report(), no_predictions, labels=LABELS), "accuracy")
    assert row.status == PASS and row.counts is None
    assert "unpaired: the baseline has no per-sample predictions" in row.note and "independent" in row.noise
    row = _row(compare_to_baseline(make_report(), base, labels=None), "accuracy")
    assert "labels were not found" in row.note


def test_eval_labels_come_from_the_verified_inputs_beside_the_report(tmp_path):
    from edgekd.io import sha256_file

    np.savez_compressed(tmp_path / "eval.npz", x=np.zeros((N_TEST, 4), np.float32), y=LABELS)
    inputs = {"path": "eval.npz", "sha256": sha256_file(tmp_path / "eval.npz"), "samples": N_TEST}
    assert np.array_equal(eval_labels(tmp_path / "report.json", make_report(eval_inputs=inputs)), LABELS)
    other = make_report(eval_inputs={**inputs, "sha256": "0" * 64})
    assert eval_labels(tmp_path / "report.json", other) is None
    with pytest.raises(EdgekdError, match="not a plain file name"):  # the schema refuses a path outside the run
        eval_labels(tmp_path / "report.json", {**other, "eval_inputs": {**inputs, "path": "../eval.npz"}})


def test_different_hardware_refuses_latency_and_memory(tmp_path, target_file, capsys):
    other = make_report(seed=0)
    other["measured_on"].update(cpu="AMD EPYC 7763", cores=4)
    base = write(tmp_path / "base.json", other)
    report = write(tmp_path / "r.json", make_report(seed=3, slowdown=2.0))
    code, out, _ = gate(capsys, report, "--target", str(target_file), "--baseline", base)
    assert code == 0, out  # refused, not failed: 2x on other hardware says nothing
    assert _status(out, "latency_ms_p50", "model_int8.xml") == "UNVERIFIED"
    assert _status(out, "peak_memory_mb", "model_int8.xml") == "UNVERIFIED"
    assert _status(out, "model_size_kb", "model_int8.xml") == "pass"
    assert "different hardware" in out and "cores 4 (baseline) vs 2 (report)" in out
    code, _, _ = gate(capsys, report, "--target", str(target_file), "--baseline", base, "--strict")
    assert code == 1


def test_missing_artifact_in_baseline_is_unverified():
    base = make_report(seed=0)
    base["artifacts"] = base["artifacts"][1:]
    checks = compare_to_baseline(make_report(seed=1), base)
    missing = [c for c in checks if c.artifact == "model_int8.xml"]
    assert len(missing) == 1 and missing[0].status == UNVERIFIED and "has no openvino int8" in missing[0].note


def test_update_baseline_accepts_a_slower_report_on_purpose(tmp_path, target_file, capsys):
    base = tmp_path / "base.json"
    write(base, make_report(seed=0))
    slow = write(tmp_path / "r.json", make_report(seed=1, slowdown=2.0))
    code, out, _ = gate(capsys, slow, "--target", str(target_file), "--baseline", str(base), "--update-baseline")
    assert code == 0, out
    assert "baseline updated" in out and "accepted (--update-baseline)" in out
    assert base.read_text() == Path(slow).read_text()
    assert not list(tmp_path.glob(".base.json.*"))  # atomic: no temp file left behind
    code, out, _ = gate(capsys, slow, "--target", str(target_file), "--baseline", str(base))
    assert code == 0, out

    first = tmp_path / "new" / "baseline.json"  # no baseline yet: the first one is created
    code, out, _ = gate(capsys, slow, "--target", str(target_file), "--baseline", str(first), "--update-baseline")
    assert code == 0 and first.is_file()


# ------------------------------------------------------------------------------------------------ CI outputs
def test_summary_file_and_github_step_summary(tmp_path, target_file, capsys, monkeypatch):
    step = tmp_path / "step.md"
    step.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    summary = tmp_path / "summary.md"
    base = write(tmp_path / "base.json", make_report(seed=0))
    code, _, _ = gate(capsys, write(tmp_path / "r.json", make_report(seed=4)), "--target", str(target_file),
                      "--baseline", base, "--summary", str(summary))
    assert code == 0
    text = summary.read_text()
    assert "edgekd gate `x86-cpu`: PASSED" in text
    assert "| latency_ms_p95 | model_int8.xml |" in text and "| latency_ms_p50 | model_int8.onnx |" in text
    assert step.read_text().startswith("earlier step\n") and text in step.read_text()


# ------------------------------------------------------------------------------------------------ bad input
def _bad_inputs(tmp_path: Path) -> list[tuple[list[str], str]]:
    good = make_report()
    old = {**copy.deepcopy(good), "schema_version": REPORT_SCHEMA_VERSION - 1}
    new = {**copy.deepcopy(good), "schema_version": REPORT_SCHEMA_VERSION + 1}
    unversioned = {k: v for k, v in good.items() if k != "schema_version"}
    other_target = {**copy.deepcopy(good), "target": "rpi4"}
    no_size = copy.deepcopy(good)
    del no_size["artifacts"][0]["size_bytes"]
    no_artifacts = {k: v for k, v in good.items() if k != "artifacts"}
    nan_latency, shipped_no_accuracy, negative_size = (copy.deepcopy(good) for _ in range(3))
    nan_latency["artifacts"][0]["latency_ms"]["p95"] = float("nan")  # a NaN must never pass a budget
    shipped_no_accuracy["artifacts"][0]["accuracy"] = None
    negative_size["artifacts"][1]["size_bytes"] = -5
    (tmp_path / "broken.json").write_text("{not json")
    ok = write(tmp_path / "ok.json", good)
    return [
        ([str(tmp_path / "broken.json")], "is not valid JSON"),
        ([str(tmp_path / "missing.json")], "report not found"),
        ([write(tmp_path / "old.json", old)], f"schema_version {REPORT_SCHEMA_VERSION - 1} is older than"),
        ([write(tmp_path / "new.json", new)], f"schema_version {REPORT_SCHEMA_VERSION + 1} is newer than"),
        ([write(tmp_path / "unv.json", unversioned)], "has no schema_version"),
        ([write(tmp_path / "rpi.json", other_target), "--target", "x86-cpu"], "is for target 'rpi4', not 'x86-cpu'"),
        ([write(tmp_path / "nosize.json", no_size)], "artifacts.0.size_bytes: Field required"),
        ([write(tmp_path / "noart.json", no_artifacts)], "artifacts: Field required"),
        ([write(tmp_path / "nan.json", nan_latency)], "artifacts.0.latency_ms.p95"),
        ([write(tmp_path / "noacc.json", shipped_no_accuracy)], "is shipped but has no accuracy"),
        ([write(tmp_path / "negsize.json", negative_size)], "artifacts.1.size_bytes"),
        ([ok, "--baseline", str(tmp_path / "nobase.json")], "baseline not found"),
        ([ok, "--baseline", write(tmp_path / "base-rpi.json", other_target)], "is for target 'rpi4'"),
        ([ok, "--baseline", write(tmp_path / "base-old.json", old)], "baseline"),
        ([ok, "--update-baseline"], "--update-baseline needs --baseline"),
        ([ok, "--target", "no-such-target"], "unknown target"),
    ]


def test_bad_inputs_exit_2_with_one_message(tmp_path, capsys):
    for args, message in _bad_inputs(tmp_path):
        code, out, err = gate(capsys, *args, "--target", "x86-cpu") if "--target" not in args \
            else gate(capsys, *args)
        assert code == 2, (args, out, err)
        assert message in err, (args, err)
        assert err.count("edgekd: error:") == 1 and "Traceback" not in err
        assert out == ""


def test_negative_max_regression_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["gate", write(tmp_path / "r.json", make_report()), "--max-regression", "-5"])
    assert exc.value.code == 2
    assert "must be a number >= 0" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ target identity
PI4_MACHINE = {"arch": "aarch64", "cpu": "BCM2835", "board": "Raspberry Pi 4 Model B Rev 1.4", "cores": 4,
               "memory_mb": 3793}


@pytest.mark.parametrize("target", ["rpi4", "jetson-orin-nano"])
def test_a_report_built_here_for_a_board_leaves_every_device_budget_unverified(target):
    report = {**make_report(), "target": target}
    checks = evaluate_gate_dict(report, target)
    device = [c for c in checks if c["device_bound"]]
    assert len(device) == 4 and all(c["status"] == UNVERIFIED for c in device)
    assert all("build host is not the target device" in c["note"] for c in device)


def test_a_matching_board_verifies_rpi4_but_a_jetson_cpu_run_never_verifies_tensorrt():
    report = {**make_report(), "target": "rpi4"}
    report["device_results"] = [device_result(report, remote="pi@pi4", arch="aarch64", cpu_flags=None,
                                              **{k: v for k, v in PI4_MACHINE.items() if k != "arch"})]
    device = [c for c in evaluate_gate_dict(report, "rpi4") if c["device_bound"]]
    assert all(c["status"] == PASS and "pi@pi4 is the target device (identity:" in c["note"] for c in device)

    orin = {"cpu": "", "board": "NVIDIA Orin Nano Developer Kit", "cores": 6, "memory_mb": 7620}
    report = {**make_report(), "target": "jetson-orin-nano"}
    report["device_results"] = [device_result(report, remote="nv@orin", arch="aarch64", cpu_flags=None, **orin)]
    device = [c for c in evaluate_gate_dict(report, "jetson-orin-nano") if c["device_bound"]]
    assert all(c["status"] == UNVERIFIED and "a CPU run never verifies" in c["note"] for c in device)


def evaluate_gate_dict(report: dict, target: str) -> list[dict]:
    from edgekd.gate import evaluate_gate

    return evaluate_gate(report, load_target(target)).to_dict()["checks"]


def test_a_teacher_that_scored_zero_sets_no_accuracy_floor(target_file):
    """min_accuracy_ratio against a teacher at 0: the row passes and says why (it called the teacher's accuracy
    missing and left the row unverified)."""
    report = make_report()
    report["teacher"]["accuracy"] = 0.0
    rows = [c for c in evaluate_gate(report, load_target(target_file)).checks if c.name == "min_accuracy_ratio"]
    assert rows and all(c.status == PASS and "the teacher scored 0" in c.note for c in rows)
