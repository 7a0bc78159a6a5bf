"""benchmarks/kd_quality.py: its options, statistics and verdict, and that a restarted measurement resumes (the
measurement itself runs in the background for hours; its --quick mode runs in test_benchmarks_quick.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "kd_quality.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("kd_quality_bench", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_mode_and_explicit_choices(bench):
    args = bench.parse_args(["--quick"])
    assert (args.max_train, args.epoch_cap, args.patience, args.seeds, args.teacher_epochs) == (3000, 2, 1, 1, 1)
    assert bench.parse_args(["--quick", "--seeds", "2", "--epoch-cap", "3"]).seeds == 2
    assert bench.parse_args(["--quick", "--epoch-cap", "3"]).epoch_cap == 3
    full = bench.parse_args([])
    assert full.seeds == 3 and full.max_train is None and full.epoch_cap == 40 and full.lr_schedule == "constant"
    assert full.methods == ["kd", "kd-consistent"] and full.augment is None  # the build's augmentation: none
    assert bench.parse_args(["--augment", ""]).augment == []
    with pytest.raises(SystemExit) as exited:
        bench.parse_args(["--methods", "kd,nope"])
    assert exited.value.code == 2


def test_results_file_named_by_dataset(bench, tmp_path):
    args = bench.parse_args(["--data", str(tmp_path)])
    assert Path(bench.default_out(args, "fashion-mnist")).name == "kd_quality_fashion_mnist.json"
    assert Path(bench.default_out(bench.parse_args([]), "cifar10-jpg")).name == "kd_quality.json"


def test_consistent_teaching_dropped_without_augmentation(bench):
    from edgekd.distill.trainer import TrainConfig

    args = bench.parse_args(["--methods", "kd,kd-consistent,dkd"])
    said = []
    assert bench.methods_to_run(args, TrainConfig(), said.append) == ["kd", "dkd"] and "kd-consistent" in said[0]
    assert bench.methods_to_run(args, TrainConfig(augment=("flip",)), said.append) == ["kd", "kd-consistent", "dkd"]


def _run(seed, acc, val, epoch_s, best=3, stopped="plateau", load=1.0):
    return {"seed": seed, "accuracy": acc, "val_accuracy": val, "train_time_s": 3 * epoch_s, "epoch_time_s": epoch_s,
            "best_epoch": best, "epoch_cap": 10, "stopped": stopped, "load_before": load, "load_after": load}


RUNS = {"alone": [_run(0, 0.50, 0.52, 10.0), _run(1, 0.52, 0.50, 10.0)],
        "kd": [_run(0, 0.56, 0.55, 10.0), _run(1, 0.58, 0.55, 10.0)],
        "kd-consistent": [_run(0, 0.54, 0.60, 15.0), _run(1, 0.54, 0.60, 15.0, best=10, stopped="cap", load=3.0)]}


def test_summary_gain_gap_and_selection_on_validation(bench):
    args = bench.parse_args(["--methods", "kd,kd-consistent"])
    alone, methods, selected = bench.summarize(args, RUNS, teacher_acc=0.61)
    assert alone["accuracy_mean"] == pytest.approx(0.51)
    kd = methods["kd"]
    assert kd["gain_vs_alone_points"] == pytest.approx(6.0) and kd["gap_closed"] == pytest.approx(0.6)
    assert kd["ratio_to_teacher"] == pytest.approx(0.57 / 0.61) and kd["teaching"] == "cached"
    assert methods["kd-consistent"]["epoch_time_ratio_vs_alone"] == pytest.approx(1.5)
    assert selected == "kd-consistent"  # best on validation, though not on test: test never chooses


def test_partial_runs_pair_by_seed(bench):
    """A killed measurement: the statistics cover the finished runs, gains only the seeds both rows finished."""
    args = bench.parse_args(["--methods", "kd,kd-consistent"])
    runs = {"alone": RUNS["alone"], "kd": RUNS["kd"][:1], "kd-consistent": []}
    alone, methods, selected = bench.summarize(args, runs, teacher_acc=0.61)
    assert methods["kd"]["gain_vs_alone_points"] == pytest.approx(6.0) and methods["kd"]["accuracy_std"] == 0.0
    assert methods["kd-consistent"]["accuracy_mean"] is None and selected == "kd"
    assert bench.verdict(alone, methods, {"done": 3, "expected": 6}) == "incomplete: 3/6 runs"


def test_verdict_uses_the_method_selected_on_validation(bench):
    args = bench.parse_args(["--methods", "kd,kd-consistent"])
    alone, methods, _ = bench.summarize(args, RUNS, teacher_acc=0.61)
    v = bench.verdict(alone, methods, {"done": 6, "expected": 6})
    assert v["kd_method_selected_on_val"] == "kd-consistent"  # kd is better on test: the verdict ignores that
    assert v["kd_minus_alone_points"] == pytest.approx(3.0)
    assert v["spread_points"] == pytest.approx(100 * np.std([0.50, 0.52], ddof=1))
    assert v["meets_target"] is True  # 3.0 >= 1.41 + 1.0
    assert (v["runs_stopped_on_plateau"], v["runs"]) == (5, 6)
    assert v["all_best_epochs_below_cap"] is False and v["epoch_times_comparable"] is False
    closer = {**RUNS, "kd-consistent": [_run(0, 0.52, 0.60, 15.0), _run(1, 0.53, 0.60, 15.0)]}
    alone, methods, _ = bench.summarize(args, closer, teacher_acc=0.61)
    v = bench.verdict(alone, methods, {"done": 6, "expected": 6})
    assert v["meets_target"] is False and v["all_best_epochs_below_cap"] and v["epoch_times_comparable"]


def _toy_npz(path: Path) -> Path:
    """A learnable table (each class its own mean): edgekd trains an MLP teacher and student on it in seconds."""
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (3, 12))

    def split(n):
        y = rng.integers(0, 3, n)
        return (centers[y] + 0.8 * rng.normal(0, 1, (n, 12))).astype(np.float32), y.astype(np.int64)

    (xt, yt), (xs, ys) = split(300), split(90)
    np.savez(path, x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    return path


@pytest.mark.slow
def test_a_restarted_measurement_skips_finished_runs(bench, tmp_path, monkeypatch, capsys):
    """Killed during its last run, the results file says so; restarted, only that run trains."""
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "edgekd-cache"))
    out = tmp_path / "kd.json"
    argv = ["--data", str(_toy_npz(tmp_path / "toy.npz")), "--seeds", "2", "--methods", "kd", "--epoch-cap", "4",
            "--patience", "1", "--teacher-epochs", "2", "--cache-dir", str(tmp_path / "cache"),
            "--teacher-cache", str(tmp_path / "teachers"), "--out", str(out), "--no-fast", "--threads", "1"]
    real, trained = bench.train_one, []

    def killed_at_the_last(ctx, state, args, base, name, seed, *rest):
        if (name, seed) == ("kd", 1):
            raise KeyboardInterrupt
        return real(ctx, state, args, base, name, seed, *rest)

    monkeypatch.setattr(bench, "train_one", killed_at_the_last)
    with pytest.raises(KeyboardInterrupt):
        bench.main(argv)
    partial = json.loads(out.read_text())
    assert partial["verdict"] == "incomplete: 3/4 runs" and partial["complete"] is False
    assert partial["provenance"]["seeds"] == [0, 1] and len(partial["methods"]["kd"]["runs"]) == 1

    def counted(ctx, state, args, base, name, seed, *rest):
        trained.append((name, seed))
        return real(ctx, state, args, base, name, seed, *rest)

    monkeypatch.setattr(bench, "train_one", counted)
    capsys.readouterr()
    assert bench.main(argv) == 0
    assert trained == [("kd", 1)]
    assert capsys.readouterr().out.count("finished earlier") == 4  # the teacher and 3 runs
    doc = json.loads(out.read_text())
    assert doc["complete"] is True and isinstance(doc["verdict"], dict)
    run = doc["methods"]["kd"]["runs"][1]
    assert run["epoch_cap"] == 4 and 1 <= run["best_epoch"] <= run["epochs_run"] <= 4
    assert run["stopped"] in ("plateau", "cap") and run["resumed_from_epoch"] is None
    assert doc["verdict"] == json.loads(json.dumps(bench.verdict(*[doc[k] for k in bench.ROWS])))


def test_a_measurement_that_changes_only_the_teacher_reuses_the_alone_runs(bench, tmp_path, monkeypatch, capsys):
    """The students trained alone never see the teacher: a second teacher trains only the KD runs, and its results
    pair them with the same alone rows (and the same CPU kernels)."""
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "edgekd-cache"))
    argv = ["--data", str(_toy_npz(tmp_path / "toy.npz")), "--seeds", "2", "--methods", "kd", "--epoch-cap", "2",
            "--patience", "1", "--cache-dir", str(tmp_path / "cache"), "--teacher-cache", str(tmp_path / "teachers"),
            "--no-fast", "--threads", "1"]
    real, trained = bench.train_one, []

    def counted(ctx, state, args, base, name, seed, *rest):
        trained.append((name, seed))
        return real(ctx, state, args, base, name, seed, *rest)

    monkeypatch.setattr(bench, "train_one", counted)
    first = tmp_path / "one.json"
    assert bench.main([*argv, "--teacher-epochs", "1", "--out", str(first)]) == 0
    assert sorted(trained) == [("alone", 0), ("alone", 1), ("kd", 0), ("kd", 1)]
    trained.clear()
    second = tmp_path / "two.json"
    assert bench.main([*argv, "--teacher-epochs", "2", "--out", str(second)]) == 0
    assert sorted(trained) == [("kd", 0), ("kd", 1)]
    one, two = json.loads(first.read_text()), json.loads(second.read_text())
    assert one["teacher"]["epochs"] == 1 and two["teacher"]["epochs"] == 2
    strip = [{k: v for k, v in r.items() if k != "shared_from"} for r in two["alone"]["runs"]]
    assert strip == one["alone"]["runs"] and all(r["shared_from"].endswith(".json") for r in two["alone"]["runs"])
    assert two["complete"] and two["verdict"] == json.loads(json.dumps(bench.verdict(*[two[k] for k in bench.ROWS])))


def test_the_shared_teacher_resumes_a_killed_training_and_ends_as_a_fresh_one(bench, tmp_path, monkeypatch):
    """latency_selection and capacity_proxy train this teacher for many minutes: a stop mid-way resumes it from
    its last epoch (``teacher-<hash>.partial/``, removed once the teacher is cached)."""
    from tests.conftest import make_dataset

    data, real = make_dataset(n_train=64, shape=(1, 8, 8)), bench.train
    recipe = bench.default_recipe()

    def crashing(*args, **kwargs):
        def stop(epoch, row):
            if epoch == 2:
                raise KeyboardInterrupt
        return real(*args, on_epoch_end=stop, **kwargs)

    recipe.cache_dir = str(tmp_path / "cache")
    monkeypatch.setattr(bench, "train", crashing)
    with pytest.raises(KeyboardInterrupt):
        bench.teacher_for(recipe, data, (4, 8, 8), 3, print)
    assert list((tmp_path / "cache").glob("teacher-*.partial/*/checkpoint.pt"))
    monkeypatch.setattr(bench, "train", real)
    resumed, info = bench.teacher_for(recipe, data, (4, 8, 8), 3, print)
    assert info["cached"] is False and not list((tmp_path / "cache").glob("*.partial"))
    recipe.cache_dir = str(tmp_path / "fresh")
    fresh, _ = bench.teacher_for(recipe, data, (4, 8, 8), 3, print)
    pairs = zip(resumed.state_dict().values(), fresh.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
