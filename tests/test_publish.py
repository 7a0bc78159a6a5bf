"""publish(): report.json, report.md and report.html written together from one schema.Report; and the promise behind
it, that a report which passes the schema renders, whatever optional field an older or partial report leaves out."""

from __future__ import annotations

import copy
import json
import typing
from pathlib import Path
from typing import Any

import pytest
from factories import make_report
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from edgekd import publish as publish_module
from edgekd.bench import _merge_and_refresh, device_entry
from edgekd.gate import evaluate_gate
from edgekd.publish import REPORT_FILES, publish
from edgekd.render_html import render_html
from edgekd.render_md import render_markdown
from edgekd.schema import Report, dump
from edgekd.targets import load_target


def _latency(value: float) -> dict[str, Any]:
    return {"p50": value, "p95": value * 1.1, "noise_pct": 1.0, "value": value * 1.1, "source": "measured"}


def _candidate(name: str, status: str, macs: int, value: float | None) -> dict[str, Any]:
    return {"name": name, "family": "mobilenetv2", "config": {"width": 1.0}, "params": macs // 10, "macs": macs,
            "latency_ms": None if value is None else _latency(value), "predicted_ms": 0.05, "capacity": macs * 0.8,
            "status": status, "reason": "inside the budget"}


def full_report() -> dict[str, Any]:
    """A report with every optional section the build writes filled in: a latency selection with its accuracy
    search, pre-flight and shipped prediction, stages, pruning, training, device results and the gate."""
    report = make_report()
    shipped = report["artifacts"][1]
    report["student"].update(accuracy_before_compression=0.99, accuracy_trained_alone=0.98, kd_gain=0.01,
                             macs_ratio_to_teacher=0.16)
    report["student"]["budget_fit"]["rule"] = "largest capacity"
    report["student"]["selection"] = {
        "mode": "latency", "why": "--selection latency", "format": shipped["format"], "precision": "int8",
        "budget_ms": 0.08, "stated_budget_ms": 0.1, "headroom": 0.8, "percentile": 95, "budget_source":
        "student_budget.latency_ms", "measured_on": "this host", "host_proxy": False, "measured": 3, "reused": 1,
        "predicted_only": 2, "time_s": 4.2, "predictor": {"kind": "nnls", "summary": "LOO error 8 %"},
        "candidates": [_candidate("mbv2_w1", "chosen", 1_548_480, 0.04), _candidate("mbv2_w2", "rejected", 3_000_000,
                                                                                   None),
                       _candidate("mbv2_w05", "accepted", 700_000, 0.02)],
        "preflight": [{"name": "mbv2_w1", "passed": True, "reason": "", "seconds": 1.5,
                       "artifacts": [{"format": "onnx", "precision": "int8"}]}],
        "shipped_prediction": {"artifact": shipped["path"], "percentile": 95, "selection_ms": 0.044,
                               "predicted_ms": 0.05, "measured_ms": 0.045, "error_pct": 11.1, "drift_pct": 2.3,
                               "stated_budget_ms": 0.1, "meets_stated_budget": True},
        "accuracy": {"ran": True, "why": "the best proxy accuracy", "rule": "successive halving", "share": 0.2,
                     "finalists": 2, "val_samples": 144, "test_split": "never read", "expected_build_s": 100.0,
                     "cap_s": 20.0, "time_s": 12.0, "pct_of_build": 9.5, "candidates": [
                         {"name": "mbv2_w1", "family": "mobilenetv2", "config": {}, "params": 1, "macs": 1_548_480,
                          "why": "the budget's own choice", "latency_ms": 0.044, "status": "chosen",
                          "proxy_accuracy": 0.9, "scores": [{"rung": 0, "steps": 10, "val_accuracy": 0.9}],
                          "step_ms": 3.0, "train_s": 1.0},
                         {"name": "mbv2_w05", "family": "mobilenetv2", "config": {}, "params": 1, "macs": 700_000,
                          "why": "the best of its group", "latency_ms": 0.022, "status": "eliminated",
                          "proxy_accuracy": 0.8, "scores": [], "step_ms": None, "train_s": None}]},
        "chosen_by": "accuracy", "chosen_why": "beats the budget's own choice", "mac_selected": "mbv2_w1"}
    report["stages"] = [{"stage": s, "artifact": shipped["path"], "accuracy": 0.99, "params": 1, "macs": 1,
                         "size_bytes": 1024, "p50_ms": 0.04} for s in ("teacher", "student", "quantized")]
    report["pruning"] = {"summary": "kept 80 % of channels"}
    report["build_time_s"], report["stage_times_s"] = 126.0, {"teacher": 60.0, "distill": 50.0}
    report["training"] = {"world_size": 1, "backend": None, "device": "cpu", "precision": "fp32"}
    report["training_optimisations"] = {"enabled": True, "cpu": "Xeon", "teacher": [], "student_kd": ["bf16"],
                                        "student_alone": None, "side_by_side_threads": None}
    report["device_results"] = [{
        "remote": "pi@board", "measured_at": "2026-12-07T12:00:00+0000",
        "measured_on": {"arch": "aarch64", "cpu": "Cortex-A72", "cores": 4, "is_target_device": False,
                        "identity": {"rule": "mismatch", "reasons": ["arch"]}},
        "artifacts": [{"path": shipped["path"], "format": "onnx", "precision": "int8", "sha256": shipped["sha256"],
                       "sha256_verified": True, "runtime": "onnxruntime", "latency_ms": {"p50": 1.0, "p95": 1.2},
                       "peak_memory_mb": 60.0, "accuracy": 0.99}],
        "errors": [], "left_out": [{"path": "teacher.onnx", "why": "not an artifact of this report"}]}]
    report["gate"] = evaluate_gate(report, load_target("x86-cpu")).to_dict()
    Report.model_validate(report)
    return report


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (``X | None``, ``list[X]``, ``Annotated[X, ...]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def optional_paths(model: type[BaseModel], data: dict[str, Any], prefix: tuple = ()) -> list[tuple]:
    """Every key of ``data`` the schema does not require, at any depth (list items by index): what an older or
    partial report may leave out. Found from the models, so a field added later is covered without a change here."""
    out = []
    for name, field in model.model_fields.items():
        if name not in data:
            continue
        path, value, nested = (*prefix, name), data[name], _nested_model(field.annotation)
        if not field.is_required():
            out.append(path)
        if nested is not None and isinstance(value, dict):
            out += optional_paths(nested, value, path)
        elif nested is not None and isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    out += optional_paths(nested, item, (*path, i))
    return out


FULL = full_report()
OPTIONAL = optional_paths(Report, FULL)


def _without(paths: set[tuple]) -> dict[str, Any]:
    report = copy.deepcopy(FULL)
    for path in sorted(paths, key=len, reverse=True):  # the deepest first: a parent may go too
        parent: Any = report
        try:
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # a parent already removed
    return report


def test_the_full_report_exercises_every_section_and_many_optional_fields():
    md, page = render_markdown(FULL), render_html(FULL)
    assert "Latency budget 0.08 ms (0.1 ms stated x headroom 0.8)" in md and "2 predicted only" in md
    assert "student_budget.latency_ms" in page and "Accuracy search" in page and "pi@board" in page
    assert len(OPTIONAL) > 60 and ("student", "selection", "budget_source") in OPTIONAL
    assert ("device_results", 0, "artifacts", 0, "sha256_verified") in OPTIONAL


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.sampled_from(OPTIONAL), max_size=25))
def test_a_report_that_passes_the_schema_renders_markdown(dropped):
    report = _without(dropped)
    try:
        Report.model_validate(report)
    except ValidationError:
        assume(False)  # e.g. a latency selection without its search's fields: the schema refuses it, as it must
    assert render_markdown(report).startswith("# edgekd report: x86-cpu")


@pytest.mark.slow  # six pages of four plots each: about a minute on a loaded 2-core host
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.sampled_from(OPTIONAL), min_size=5, max_size=40))
def test_a_report_that_passes_the_schema_renders_html(dropped):
    report = _without(dropped)
    try:
        Report.model_validate(report)
    except ValidationError:
        assume(False)
    assert render_html(report).rstrip().endswith("</body></html>")


def test_an_older_report_without_the_new_fields_loads_and_renders():
    """A report.json from before this schema: no budget_source, predicted_only or predictor-less gate rows, device
    rows without sha256_verified: the defaults mean "not recorded", the gate and the renderers still work."""
    old = copy.deepcopy(FULL)
    for key in ("budget_source", "predicted_only", "mac_selected"):
        del old["student"]["selection"][key]
    del old["device_results"][0]["artifacts"][0]["sha256_verified"]
    old["gate"] = {"passed": True, "violations": []}
    model = Report.model_validate(old)
    assert model.student.selection.budget_source == "not recorded" and model.gate.checks == []
    assert "(not recorded)" in render_markdown(old) and "</html>" in render_html(old)
    assert evaluate_gate(old, load_target("x86-cpu")).checks


def _old_files(run: Path) -> dict[str, str]:
    run.mkdir(exist_ok=True)
    for name in REPORT_FILES:
        (run / name).write_text(f"old {name}")
    return {name: (run / name).read_text() for name in REPORT_FILES}


def test_publish_writes_the_three_files_from_one_validated_model(tmp_path):
    run = tmp_path / "run"
    _old_files(run)
    written = publish(Report.model_validate(FULL), run)
    assert json.loads((run / "report.json").read_text()) == dump(written)
    assert (run / "report.md").read_text() == render_markdown(written)
    assert (run / "report.html").read_text() == render_html(written, run / "eval.npz")
    assert sorted(p.name for p in run.iterdir()) == sorted(REPORT_FILES)  # no temporary file left
    assert {(run / name).stat().st_mode & 0o777 for name in REPORT_FILES} == {0o600}  # private, as every run file


def test_publish_leaves_the_old_files_when_rendering_or_validation_fails(tmp_path, monkeypatch):
    run = tmp_path / "run"
    before = _old_files(run)
    broken = Report.model_validate(FULL)
    broken.artifacts[0].accuracy = 1.5  # assignment is not validated: publish validates again
    with pytest.raises(ValidationError, match="accuracy"):
        publish(broken, run)
    monkeypatch.setattr(publish_module, "render_html", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        publish(Report.model_validate(FULL), run)
    assert {name: (run / name).read_text() for name in REPORT_FILES} == before
    assert sorted(p.name for p in run.iterdir()) == sorted(REPORT_FILES)


def test_publish_failing_while_staging_removes_what_it_staged(tmp_path, monkeypatch):
    run = tmp_path / "run"
    before = _old_files(run)
    real = publish_module._staged

    def staged(path: Path, text: str) -> Path:
        if path.name == "report.html":
            raise OSError("disk full")
        return real(path, text)

    monkeypatch.setattr(publish_module, "_staged", staged)
    with pytest.raises(OSError, match="disk full"):
        publish(Report.model_validate(FULL), run)
    assert {name: (run / name).read_text() for name in REPORT_FILES} == before
    assert sorted(p.name for p in run.iterdir()) == sorted(REPORT_FILES)


def _spy_on_publish(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(folder, file) of every file publish() stages, however the caller imported publish."""
    calls: list[tuple[str, str]] = []
    real = publish_module._staged

    def staged(path: Path, text: str) -> Path:
        calls.append((path.parent.name, path.name))
        return real(path, text)

    monkeypatch.setattr(publish_module, "_staged", staged)
    return calls


def test_bench_refreshes_the_report_through_publish(tmp_path, monkeypatch):
    """`edgekd bench`'s merge ends in the same publish() as `edgekd build` (api._finish): one writer."""
    calls = _spy_on_publish(monkeypatch)
    report = copy.deepcopy(FULL)
    report["target_path"] = str(load_target("x86-cpu").path)
    run = tmp_path / "run"
    _old_files(run)
    machine = {"arch": "x86_64", "cpu": "AMD EPYC", "cpu_flags": ["avx2"], "cores": 4, "memory_mb": 8000}
    result = {"runner_version": "1", "artifact": report["artifacts"][0]["path"], "format": "openvino",
              "precision": "int8", "sha256": report["artifacts"][0]["sha256"], "sha256_verified": True,
              "runtime": {"name": "openvino", "version": "1"}, "machine": machine, "threads": 2, "load_ms": 1.0,
              "first_inference_ms": 1.0, "latency_ms": {"p50": 0.1, "p90": 0.1, "p95": 0.1, "p99": 0.1, "mean": 0.1,
                                                        "std": 0.0}}
    said: list[str] = []
    _merge_and_refresh(run, report, [device_entry("ci@box", [result], [], load_target("x86-cpu"))], said.append)
    assert calls == [(run.name, name) for name in REPORT_FILES]
    refreshed = json.loads((run / "report.json").read_text())
    assert refreshed["device_results"][-1]["remote"] == "ci@box"
    assert (run / "report.md").read_text() == render_markdown(refreshed)
    assert any("refreshed" in s and "PASSED" in s for s in said)


@pytest.mark.slow
def test_build_and_bench_publish_through_the_same_writer(tmp_path, monkeypatch):
    """A real build, then `edgekd bench` on its run directory: both end in publish.publish, and each time report.md
    and report.html are exactly what the renderers make of the report.json beside them."""
    from edgekd.api import BuildOptions, build
    from edgekd.cli import main

    calls = _spy_on_publish(monkeypatch)
    run = tmp_path / "run"
    build(BuildOptions(target="x86-cpu", out=run, epochs=1, teacher_epochs=1, max_train=300, runs=20, warmup=2,
                       selection="mac", progress=False, teacher_cache=None, log=lambda m: None))
    assert [name for _, name in calls] == list(REPORT_FILES)  # into the staging directory, then swapped in

    def consistent() -> dict[str, Any]:
        report = json.loads((run / "report.json").read_text())
        assert (run / "report.md").read_text() == render_markdown(report)
        assert (run / "report.html").read_text() == render_html(report, run / "eval.npz")
        return report

    built = consistent()
    assert main(["bench", str(run), "--runs", "20", "--warmup", "2"]) == 0
    assert calls[3:] == [("run", name) for name in REPORT_FILES]
    assert len(consistent()["device_results"]) == len(built["device_results"]) + 1
