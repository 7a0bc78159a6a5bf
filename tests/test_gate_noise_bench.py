"""benchmarks/gate_noise.py: its --quick mode runs end to end on real onnxruntime models, and its verdict is its own
(computed from its rows, "invalid: host busy" when the host was loaded)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def gate_noise(monkeypatch, tmp_path) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("bench_gate_noise", BENCHMARKS / "gate_noise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CACHE", tmp_path / "cache")  # the quick models, never in the checkout
    return module


def _summary(false_alarms: int, detected: dict[float, int], total: int = 20) -> dict:
    return {"same_total": total, "same_false_alarms_by": {"latency_ms_p5": 0, "latency_ms_p50": false_alarms,
                                                          "latency_ms_p95": 0},
            "slowdowns": [{"target_factor": f, "detected": n, "total": total} for f, n in detected.items()]}


def test_verdict_is_issue_36s_bar_and_a_busy_host_voids_it(gate_noise):
    good = {1.15: 3, 1.3: 10, 1.5: 19, 2.0: 20}  # 1.15x and 1.3x are reported, not judged
    assert gate_noise.summary_verdict(_summary(1, good)) == "pass"
    assert gate_noise.summary_verdict(_summary(2, good)) == "fail: latency_ms_p50: 2/20 false alarms"
    assert gate_noise.summary_verdict(_summary(0, {**good, 1.5: 18})) == "fail: 1.5x detected 18/20"
    quiet = [{"load_1min": 1.7, "load_1min_after": 1.8}]
    busy = [{"load_1min": 1.7, "load_1min_after": gate_noise.QUIET_LOAD + 0.1}]
    assert gate_noise.overall_verdict(_summary(0, good), quiet, False) == "pass"
    assert gate_noise.overall_verdict(_summary(0, good), busy, False) == "invalid: host busy"
    assert gate_noise.overall_verdict(_summary(0, good), quiet, True) == "invalid: host busy"


def test_quick_mode_measures_all_three_modes_with_provenance(gate_noise, tmp_path):
    out = tmp_path / "gate_noise.json"
    assert gate_noise.main(["--quick", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["repeats"] == 1 and doc["processes"] == 3
    for summary in (doc, doc["stored_number"], doc["stored_number_blocks_only"]):
        assert summary["same_total"] == 1 and set(summary["same_false_alarms_by"]) == set(gate_noise.LATENCY_METRICS)
        assert [s["target_factor"] for s in summary["slowdowns"]] == [2.0]
    it = doc["iterations"][0]
    assert it["x2"]["factor"] > 1.05  # the wider model is slower, timed interleaved
    assert all(it["same"][mode]["latency"]["latency_ms_p50"]["mdr_pct"] is not None for mode in gate_noise.MODES)
    prov = doc["provenance"]
    for key in ("commit", "dirty", "command", "cpu", "cpu_flags", "cores", "loadavg_before", "loadavg_after",
                "runtimes", "seeds", "wall_s"):
        assert key in prov
    assert prov["quiet_load"] == gate_noise.QUIET_LOAD and prov["runtimes"]["onnxruntime"]
    loads = doc["load_1min"] + [prov["loadavg_before"][0], prov["loadavg_after"][0]]
    if max(loads) > doc["quiet_load"]:
        assert doc["verdict"] == "invalid: host busy"
    else:
        assert doc["verdict"] == gate_noise.summary_verdict(doc)
