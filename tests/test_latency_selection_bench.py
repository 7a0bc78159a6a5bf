"""benchmarks/latency_selection.py: the verdict from the rows, and --quick runs end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "latency_selection.py"


def _script():
    spec = importlib.util.spec_from_file_location("bench_latency_selection", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(sel_acc: float, sel_std: float, mac_acc: float, mac_std: float, meets: bool = True,
         mac_meets: bool = True, target: str = "x86-cpu") -> dict:
    return {"data": "fmnist", "target": target, "latency_budget_ms": 0.1,
            "latency_selected": {"accuracy": sel_acc, "accuracy_std": sel_std, "meets_budget": meets},
            "mac_selected": {"accuracy": mac_acc, "accuracy_std": mac_std, "meets_budget": mac_meets}}


def _nothing(mac_meets: bool) -> dict:
    return {"data": "fmnist", "target": "x86-cpu", "latency_budget_ms": 0.01, "latency_selected": None,
            "note": "no student fits",
            "mac_selected": {"accuracy": 0.9, "accuracy_std": 0.0, "meets_budget": mac_meets}}


def test_the_verdict_is_computed_from_the_rows():
    verdict = _script().verdict
    good = [_row(0.90, 0.005, 0.88, 0.004), _row(0.91, 0.003, 0.89, 0.01), _row(0.85, 0.01, 0.855, 0.002)]
    v = verdict(good)
    assert v["passed"] and v["better_beyond_spread"] == 2 and v["rows_ok"] == 3
    assert not verdict([*good, _row(0.80, 0.005, 0.88, 0.004)])["passed"]  # worse beyond the spread
    assert not verdict([*good, _row(0.95, 0.001, 0.88, 0.001, meets=False)])["passed"]  # misses its budget
    one_better = [good[0], good[2], _row(0.86, 0.01, 0.855, 0.002)]
    assert not verdict(one_better)["passed"]  # only one row better beyond the spread


def test_each_data_set_and_target_needs_three_judged_budgets():
    verdict = _script().verdict
    good = [_row(0.90, 0.005, 0.88, 0.004), _row(0.91, 0.003, 0.89, 0.01), _row(0.85, 0.01, 0.855, 0.002)]
    v = verdict(good[:2])
    assert not v["passed"] and v["judged_budgets_per_data_target_min"] == 2
    assert not verdict([*good, _row(0.9, 0.01, 0.9, 0.01, target="rpi4")])["passed"]  # rpi4: one budget


def test_a_budget_under_the_runtimes_floor_is_reported_not_judged_and_a_missed_fit_fails():
    verdict = _script().verdict
    good = [_row(0.90, 0.005, 0.88, 0.004), _row(0.91, 0.003, 0.89, 0.01), _row(0.85, 0.01, 0.855, 0.002)]
    v = verdict([*good, _nothing(mac_meets=False)])  # neither rule can ship a student: infeasible
    assert v["passed"] and v["rows_infeasible"] == 1 and v["per_row"][-1]["why"].startswith("infeasible")
    assert not verdict([*good, _nothing(mac_meets=True)])["passed"]  # the MAC student fits: a miss


def test_where_the_mac_student_breaks_the_budget_the_selected_one_must_meet_it():
    verdict = _script().verdict
    good = [_row(0.90, 0.005, 0.88, 0.004), _row(0.91, 0.003, 0.89, 0.01), _row(0.85, 0.01, 0.855, 0.002)]
    smaller = _row(0.84, 0.004, 0.88, 0.004, mac_meets=False)  # less accurate, but the MAC one is not deployable
    v = verdict([*good, smaller])
    assert v["passed"] and v["per_row"][-1]["ok"] and not v["per_row"][-1]["better_beyond_spread"]
    assert not verdict([*good, _row(0.84, 0.004, 0.88, 0.004, meets=False, mac_meets=False)])["passed"]


@pytest.mark.slow
def test_quick_mode_writes_the_keys_with_provenance_and_a_rerun_resumes(tmp_path):
    from test_benchmarks_quick import assert_recomputes

    out, again, state = tmp_path / "ls.json", tmp_path / "again.json", str(tmp_path / "state")
    first = _script()
    first.QUIET_LOAD = 1e9  # a busy CI host's pieces would be measured again; resuming is what this checks
    assert first.main(["--quick", "--out", str(out), "--cache-dir", state]) == 0
    doc = json.loads(out.read_text())
    assert doc["quick"] and doc["seeds"] == [0, 1] and doc["provenance"]["command"]
    assert_recomputes(doc, "latency_selection")
    row = doc["budgets"][0]
    for key in ("latency_budget_ms", "selection_cost_s", "selection_cost_pct_of_build", "accuracy_search"):
        assert key in row, key
    for side in ("latency_selected", "mac_selected"):
        assert {"config", "p50_ms", "p95_ms", "accuracy", "accuracy_std"} <= set(row[side])
    assert "prediction_error_pct" in doc and doc["verdict"]
    assert [p["resumed"] for p in doc["pieces"]] == [False, False]  # the MAC student, then the one budget
    second = _script()
    second.QUIET_LOAD = 1e9
    assert second.main(["--quick", "--out", str(again), "--cache-dir", state]) == 0
    resumed = json.loads(again.read_text())
    assert [p["resumed"] for p in resumed["pieces"]] == [True, True]
    assert resumed["budgets"] == doc["budgets"]

def _args(tmp_path, **over):
    import argparse
    base = {"quick": False, "seeds": [0, 1, 2], "max_train": 20000, "train_samples": None, "epochs": 8,
            "teacher_epochs": 10, "teacher_widths": "32,64,128", "max_measure": 12, "threads": 1,
            "cache_dir": str(tmp_path / "cache")}
    return argparse.Namespace(**{**base, **over})


def test_a_finished_piece_is_reused_by_the_next_command_and_keeps_its_own_record(tmp_path, monkeypatch):
    script, calls = _script(), []
    monkeypatch.setattr(script, "QUIET_LOAD", 1e9)  # a piece from a busy host would be measured again

    def work():
        calls.append(1)
        return {"p95_ms": 0.5}

    first = script.Pieces(_args(tmp_path))
    assert first.get_or_run("fm/x86-cpu/mac", work, print) == {"p95_ms": 0.5}
    second = script.Pieces(_args(tmp_path))
    assert second.get_or_run("fm/x86-cpu/mac", work, print) == {"p95_ms": 0.5}
    assert len(calls) == 1
    [record] = second.record()
    assert record["resumed"] and record["piece"] == "fm/x86-cpu/mac" and "loadavg_before" in record
    assert "commit" in record and "started_utc" in record


def test_pieces_from_other_settings_or_another_cpu_are_never_mixed_in(tmp_path, monkeypatch):
    script = _script()
    monkeypatch.setattr(script, "QUIET_LOAD", 1e9)
    script.Pieces(_args(tmp_path)).get_or_run("fm/x86-cpu/mac", lambda: 1, print)
    assert not script.Pieces(_args(tmp_path, epochs=4)).doc["pieces"]
    monkeypatch.setattr(script, "host_identity", lambda: {"cpu": "another", "cpu_flags": [], "cores": 2})
    assert not script.Pieces(_args(tmp_path)).doc["pieces"]


def test_a_piece_run_on_a_busy_host_taints_the_file_and_is_measured_again(tmp_path, monkeypatch):
    script = _script()
    monkeypatch.setattr(script, "QUIET_LOAD", -1.0)  # any load is "busy"
    busy = script.Pieces(_args(tmp_path))
    busy.get_or_run("fm/rpi4/0.6", lambda: 1, print)
    busy.get_or_run("fm/rpi4/0.9", lambda: 2, print)
    assert busy.any_busy()
    monkeypatch.setattr(script, "QUIET_LOAD", 1e9)
    later = script.Pieces(_args(tmp_path))
    assert later.get_or_run("fm/rpi4/0.6", lambda: 3, print) == 3  # not the busy run's value
    assert not later.any_busy() and [r["resumed"] for r in later.record()] == [False]
    assert script.Pieces(_args(tmp_path)).get_or_run("fm/rpi4/0.6", lambda: 4, print) == 3  # now reused


def test_prediction_error_is_read_from_the_rows():
    script = _script()
    rows = [{"latency_selected": {"predicted_p95_ms": 1.1, "p95_ms": 1.0}},
            {"latency_selected": {"predicted_p95_ms": 0.7, "p95_ms": 1.0}}, {"latency_selected": None}]
    assert script.prediction_error_pct(rows) == pytest.approx(20.0)
    assert script.prediction_error_pct([{"latency_selected": None}]) is None
