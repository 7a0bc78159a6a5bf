"""benchmarks/kd_quality.py's arithmetic and options (the benchmark itself runs for the integrator, not in tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "kd_quality.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("kd_quality_bench", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_mode_and_explicit_choices(bench):
    args = bench.parse_args(["--quick"])
    assert (args.max_train, args.epochs, args.seeds, args.teacher_epochs) == (3000, 1, 1, 1)
    assert bench.parse_args(["--quick", "--seeds", "2"]).seeds == 2
    assert bench.parse_args([]).seeds == 3 and bench.parse_args([]).max_train is None  # all training images
    assert bench.parse_args(["--augment", ""]).augment == []
    with pytest.raises(SystemExit) as exited:
        bench.parse_args(["--methods", "kd,nope"])
    assert exited.value.code == 2


def _run(seed, acc, val, epoch_s):
    return {"seed": seed, "accuracy": acc, "val_accuracy": val, "train_time_s": 3 * epoch_s, "epoch_time_s": epoch_s}


def test_summary_gain_gap_and_selection_on_validation(bench):
    args = bench.parse_args(["--methods", "kd,kd-consistent"])
    runs = {"alone": [_run(0, 0.50, 0.52, 10.0), _run(1, 0.52, 0.50, 10.0)],
            "kd": [_run(0, 0.56, 0.55, 10.0), _run(1, 0.58, 0.55, 10.0)],
            "kd-consistent": [_run(0, 0.54, 0.60, 15.0), _run(1, 0.54, 0.60, 15.0)]}
    alone, methods, selected = bench.summarize(args, runs, teacher_acc=0.61)
    assert alone["accuracy_mean"] == pytest.approx(0.51)
    kd = methods["kd"]
    assert kd["gain_vs_alone_points"] == pytest.approx(6.0) and kd["gap_closed"] == pytest.approx(0.6)
    assert kd["ratio_to_teacher"] == pytest.approx(0.57 / 0.61) and kd["teaching"] == "cached"
    assert methods["kd-consistent"]["epoch_time_ratio_vs_alone"] == pytest.approx(1.5)
    assert selected == "kd-consistent"  # best on validation, though not on test: test never chooses
    for key in ("accuracy_mean", "accuracy_std", "epoch_time_ratio_vs_alone"):
        assert key in kd
