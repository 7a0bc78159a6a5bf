"""report.md: the tables a person reads first, rendered from a schema-valid report."""

from __future__ import annotations

from factories import make_report

from edgekd.render_md import comparison_table, render_markdown


def test_markdown_has_every_model_and_says_where_it_was_measured():
    report = make_report(on_device=False, measured_on={
        "arch": "x86_64", "cpu": "Test CPU", "cores": 2, "threads": 2, "is_target_device": False,
        "identity": {"rule": "mismatch", "reasons": ["no avx2"]}})
    text = render_markdown(report)
    assert "a host that is NOT the target device" in text and "Target-device rule: mismatch (no avx2)" in text
    table = comparison_table(report)
    for name in ("model_int8.xml", "model_int8.onnx", "model_fp32.onnx", "teacher (teacher_cnn)"):
        assert name in table
    assert table.count("**yes**") == 2  # the two shipped artifacts
    assert "| 0.995 |" not in table and "99.50 %" in table  # accuracies as percentages


def test_markdown_reports_kd_gain_and_stages_when_present():
    report = make_report()
    report["student"].update(accuracy_trained_alone=0.98, kd_gain=0.015)
    report["stages"] = [{"stage": "teacher", "artifact": "teacher_fp32.onnx", "accuracy": 0.99, "params": 10,
                         "macs": 100, "size_bytes": 4096, "p50_ms": 0.4},
                        {"stage": "quantized", "artifact": "model_int8.onnx", "accuracy": 0.99, "params": 1,
                         "macs": 10, "size_bytes": 1024, "p50_ms": 0.04}]
    text = render_markdown(report)
    assert "KD gain +1.50 points" in text
    assert "| quantized | model_int8.onnx | 99.00 % | 1 | 10 | 1.0 KiB | 0.0400 |" in text
