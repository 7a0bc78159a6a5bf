"""report.html: one self-contained file with the table and the three plots, robust to what a report lacks."""

from __future__ import annotations

import base64
import re

import factories
import numpy as np

from edgekd.render_html import per_class_accuracy, write_html


def make_report() -> dict:
    per_class = {"per_class_accuracy": {"0": 0.9, "1": 1.0, "2": 0.8}}
    return factories.make_report(
        data={"name": "toy", "classes": ["cat", "dog", "<b>bird</b>"]},
        measured_on={"arch": "x86_64", "cpu": "Test CPU", "cores": 2, "threads": 2, "is_target_device": False},
        artifacts=[factories.artifact_row("model_fp32.onnx", "onnx", "fp32", accuracy=0.93, median_ms=0.05,
                                          shipped=False),
                   factories.artifact_row("model_int8.onnx", "onnx", "int8", accuracy=0.92, median_ms=0.03,
                                          **per_class),
                   factories.artifact_row("<script>alert(1)<\\script>.xml", "openvino", "int8", accuracy=0.91,
                                          median_ms=0.08, shipped=False)],
        device_results=[{"remote": "pi@board", "measured_at": "2026-11-23T12:05:00",
                         "measured_on": {"arch": "aarch64", "cpu": "Cortex-A72", "cores": 4,
                                         "is_target_device": False},
                         "artifacts": [{"path": "model_int8.onnx", "runtime": "onnxruntime",
                                        "runtime_version": "1.32.0", "latency_ms": {"p50": 1.2, "p95": 1.4,
                                                                                    "p99": 1.9},
                                        "noise_pct": 1.0, "accuracy": 0.92, "peak_memory_mb": 60.0}]}],
        gate={"passed": False, "violations": ["model_size_kb [x]: too big"],
              "checks": [{"name": "model_size_kb", "artifact": "x", "measured": 300.0, "unit": "KiB",
                          "comparison": "<=", "budget": 200.0, "status": "fail"}]})


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_self_contained_page_with_all_plots(tmp_path):
    y = np.array([0, 0, 1, 1, 2, 2])
    teacher = np.eye(3, dtype=np.float32)[[0, 0, 1, 1, 2, 0]]  # misses one "bird"
    student = np.eye(3, dtype=np.float32)[[0, 1, 1, 1, 2, 2]]  # misses one "cat"
    np.savez(tmp_path / "eval.npz", x=np.zeros((6, 1), np.float32), y=y, teacher_logits=teacher,
             reference_logits=student)
    assert per_class_accuracy(tmp_path / "eval.npz") == {
        "teacher": {"0": 1.0, "1": 1.0, "2": 0.5}, "student": {"0": 0.5, "1": 1.0, "2": 1.0}}

    path = write_html(make_report(), tmp_path / "report.html")
    text = path.read_text()
    images = _images(text)
    assert len(images) == 3 and all(i.startswith(b"\x89PNG") and len(i) > 5000 for i in images)
    assert not re.search(r'(src|href)="(https?:|//|file:)', text)  # nothing fetched from outside
    assert "<script>" not in text and "&lt;script&gt;" in text  # report text is escaped
    assert "NOT the target device" in text and "pi@board" in text and "Cortex-A72" in text
    assert "Gate FAILED" in text and "model_int8.onnx" in text
    assert not list(tmp_path.glob(".report.html*"))  # written atomically


def test_degrades_gracefully_without_samples_or_eval(tmp_path):
    report = make_report()
    for a in report["artifacts"]:
        a.pop("latency_ms_detail")
    del report["device_results"], report["gate"]
    text = write_html(report, tmp_path / "report.html").read_text()
    assert len(_images(text)) == 1  # accuracy vs latency still drawn
    assert "No raw latency samples" in text and "No per-class data" in text and "No device results yet" in text


def test_an_explained_int8_contract_failure_is_plotted(tmp_path):
    """accuracy_aware.int8_divergence (edgekd.compress.int8_divergence) becomes a per-layer SQNR plot."""
    report = make_report()
    plain = len(_images(write_html(report, tmp_path / "plain.html").read_text()))
    layers = [{"layer": "features.$x^{$", "op_type": "Conv", "weight_sqnr_db": 1.2, "activation_sqnr_db": 4.6,
               "output_sqnr_db": -1.7, "rank": 1},
              {"layer": "classifier", "op_type": "Gemm", "weight_sqnr_db": 45.0, "activation_sqnr_db": None,
               "output_sqnr_db": 35.0, "rank": 2}]
    report["artifacts"][1]["accuracy_aware"] = {"int8_divergence": {
        "artifact": "q1.onnx", "samples": 64, "threshold_db": 20.0, "first_below_threshold": "features.$x^{$",
        "tool": "onnxruntime qdq_loss_debug", "layers": layers}}
    text = write_html(report, tmp_path / "report.html").read_text()
    assert "int8 divergence: model_int8.onnx" in text and "First layer whose output fell below" in text
    assert len(_images(text)) == plain + 1
