"""benchmarks/text_kd.py: a seed's row read from a build report, the statistics over seeds and the verdict, and that a
finished seed is read back, not rebuilt (the measurement runs in the background; its --quick mode runs in
test_benchmarks_quick.py)."""

from __future__ import annotations

import argparse
import json

import pytest
from test_benchmarks_quick import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("text_kd")


def latency(p50: float) -> dict:
    return {"p50": p50, "p90": p50 * 1.1, "p95": p50 * 1.2, "p99": p50 * 1.3, "mean": p50, "std": 0.01}


def report(kd: float, alone: float, int8: float, fp32: float, ratio: float = 0.2, load: float = 0.5) -> dict:
    """The report fields the script reads, as a text build writes them."""
    versus = {"ratio": ratio, "p50_ms": 1.0, "teacher_p50_ms": 1.0 / ratio, "how": "interleaved"}
    return {
        "student": {"family": "text_cnn", "config": {"width": 64}, "params": 10, "macs": 100,
                    "accuracy_before_compression": kd, "accuracy_trained_alone": alone,
                    "distillation": {"loss_weights": {"kd": 0.7, "ce": 0.3}}},
        "teacher": {"arch": "text_transformer_teacher", "macs": 1000, "accuracy": 0.85},
        "artifacts": [
            {"path": "model_fp32.tflite", "format": "tflite", "precision": "fp32", "reference": "student",
             "shipped": False, "accuracy": fp32, "latency_ms": latency(2.0)},
            {"path": "model_int8.tflite", "format": "tflite", "precision": "int8", "reference": "student",
             "shipped": True, "accuracy": int8, "val_accuracy": 0.8, "latency_ms": latency(1.0),
             "latency_vs_teacher": versus, "preprocess": {"applies_to": "text", "ms": {"p50": 0.05}}},
        ],
        "build_time_s": 10.0, "measured_on": {"load_average": [load, 1.0, 1.0]},
    }


def test_a_seed_row_takes_the_drop_against_the_fp32_twin_and_the_teacher_in_the_same_runtime(bench):
    row = bench.seed_row(1, report(kd=0.80, alone=0.78, int8=0.795, fp32=0.805, ratio=0.25))
    assert row["int8_drop_points"] == pytest.approx(1.0)  # vs the fp32 TFLite twin, not the PyTorch student
    assert row["teacher_p50_ms_same_runtime"] == pytest.approx(4.0) and row["student_over_teacher_latency"] == 0.25
    assert row["tokenize_p50_ms"] == 0.05 and row["precision"] == "int8" and row["format"] == "tflite"


def rows(bench, kds, alones, drops=(0.5, 0.5, 0.5), ratio=0.2):
    return [bench.seed_row(s, report(kd, alone, 0.8 - d / 100, 0.8, ratio))
            for s, (kd, alone, d) in enumerate(zip(kds, alones, drops, strict=True))]


def progress(done: int = 3, limit: float | None = 0.01) -> dict:
    return {"done": done, "expected": 3, "max_quantization_drop": limit}


def test_the_verdict_reads_kd_against_alone_within_the_seed_spread(bench):
    within = rows(bench, [0.80, 0.82, 0.78], [0.81, 0.80, 0.82])  # KD 0.67 points under alone, spread 2 points
    v = bench.verdict(within, bench.summarize(within), progress())
    assert v["kd_not_worse_than_alone"] and not v["kd_beats_alone_beyond_spread"]
    assert v["int8_within_contract"] and v["student_faster_than_teacher"] and v["timings_on_a_quiet_host"]
    worse = rows(bench, [0.70, 0.70, 0.70], [0.80, 0.80, 0.80])
    assert not bench.verdict(worse, bench.summarize(worse), progress())["kd_not_worse_than_alone"]


def test_the_verdict_fails_an_int8_drop_over_the_contract_and_a_slower_student(bench):
    slow = rows(bench, [0.8] * 3, [0.8] * 3, drops=(0.5, 1.5, 0.5), ratio=1.3)
    v = bench.verdict(slow, bench.summarize(slow), progress())
    assert v["int8_drop_points_max"] == pytest.approx(1.5) and v["int8_within_contract"] is False
    assert v["student_faster_than_teacher"] is False
    busy = [*slow[:2], bench.seed_row(2, report(0.8, 0.8, 0.8, 0.8, load=6.0))]  # one build timed on a busy host
    assert bench.verdict(busy, bench.summarize(busy), progress())["timings_on_a_quiet_host"] is False
    assert bench.verdict(slow[:1], bench.summarize(slow[:1]), progress(done=1)) == "incomplete: 1/3 seeds"


def test_a_finished_seed_is_read_back_not_rebuilt(bench, tmp_path, monkeypatch):
    out = tmp_path / "seed0"
    out.mkdir()
    (out / "report.json").write_text(json.dumps(report(0.8, 0.8, 0.8, 0.8)), encoding="utf-8")
    monkeypatch.setattr(bench, "build", lambda options: pytest.fail("rebuilt a finished seed"))
    args = argparse.Namespace(data="d", max_train=None, epochs=1, teacher_epochs=1, runs=1, warmup=0,
                              teacher_cache=str(tmp_path))
    assert bench.build_seed(args, "rpi4", out, 0, print)["build_time_s"] == 10.0


def test_quick_makes_a_two_class_table_and_keeps_one_seed(bench, tmp_path):
    args = bench.parse_args(["--quick", "--cache-dir", str(tmp_path)])
    assert (args.seeds, args.epochs, args.quick_data, args.teacher_cache) == (1, 1, True, str(tmp_path))
    assert (args.max_train, args.teacher_epochs) == (None, 1)  # the whole tiny table
    full = bench.parse_args([])
    assert (full.seeds, full.max_train, full.teacher_epochs) == (3, None, None)  # all of SST-2, the build's epochs
    cut = bench.parse_args(["--max-train", "10000", "--teacher-epochs", "4"])
    assert (cut.max_train, cut.teacher_epochs) == (10000, 4)
    assert bench.recipe_hash(full, "rpi4") != bench.recipe_hash(cut, "rpi4")  # a cut never resumes the full run
    folder = bench.tiny_sst(tmp_path / "tiny")
    labels = {line.rsplit(",", 1)[1] for line in (folder / "test.csv").read_text().splitlines()[1:]}
    assert labels == {"positive", "negative"}


def test_measurements_renders_the_per_method_and_per_seed_tables(bench):
    from test_measurements_doc import load_generator

    seeds = rows(bench, [0.80, 0.82, 0.78], [0.81, 0.80, 0.82])
    doc = {"seeds": seeds, "summary": bench.summarize(seeds), "progress": progress(), "verdict": "ok"}
    page = "\n".join(load_generator().text_kd(doc))
    assert "| kd | 0.8 | 0.02 | 3 |" in page and "| 2 | text_cnn {'width': 64} | model_int8.tflite | 0.5 |" in page
