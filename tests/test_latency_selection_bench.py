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


def _row(sel_acc: float, sel_std: float, mac_acc: float, mac_std: float, meets: bool = True) -> dict:
    return {"target": "x86-cpu", "latency_budget_ms": 0.1,
            "latency_selected": {"accuracy": sel_acc, "accuracy_std": sel_std, "meets_budget": meets},
            "mac_selected": {"accuracy": mac_acc, "accuracy_std": mac_std}}


def test_the_verdict_is_computed_from_the_rows():
    verdict = _script().verdict
    good = [_row(0.90, 0.005, 0.88, 0.004), _row(0.91, 0.003, 0.89, 0.01), _row(0.85, 0.01, 0.855, 0.002)]
    v = verdict(good)
    assert v["passed"] and v["better_beyond_spread"] == 2 and v["rows_ok"] == 3
    assert not verdict(good[:1] + good[2:])["passed"]  # only one row better beyond the spread
    assert not verdict([*good, _row(0.80, 0.005, 0.88, 0.004)])["passed"]  # worse beyond the spread
    assert not verdict([*good[:2], _row(0.95, 0.001, 0.88, 0.001, meets=False)])["passed"]  # misses its budget
    nothing = {"target": "rpi4", "latency_budget_ms": 0.01, "latency_selected": None, "note": "no student fits",
               "mac_selected": {"accuracy": 0.9, "accuracy_std": 0.0}}
    assert not verdict([*good, nothing])["passed"]


@pytest.mark.slow
def test_quick_mode_writes_the_keys_with_provenance(tmp_path):
    out = tmp_path / "ls.json"
    assert _script().main(["--quick", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["quick"] and doc["seeds"] == [0, 1] and doc["provenance"]["command"]
    row = doc["budgets"][0]
    for key in ("latency_budget_ms", "selection_cost_s", "selection_cost_pct_of_build", "accuracy_search"):
        assert key in row, key
    for side in ("latency_selected", "mac_selected"):
        assert {"config", "p50_ms", "p95_ms", "accuracy", "accuracy_std"} <= set(row[side])
    assert "prediction_error_pct" in doc and doc["verdict"]
