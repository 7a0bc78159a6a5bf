"""Latency-driven student selection (edgekd.selection, stages/student.py): fast tests with synthetic timings,
and the pre-flight that stops a build whose students fail the target's delegate before any teacher pass."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgekd.errors import EdgekdError
from edgekd.models.budget import count_macs
from edgekd.models.students import build_model
from edgekd.selection.candidates import candidate_name, enumerate_candidates, feature_matrix
from edgekd.selection.predictor import fit_predictor
from edgekd.selection.search import BATCH, MAX_MEASURE, SEEDS, select_by_latency
from edgekd.selection.timing import Timer, Timing, _timing
from edgekd.targets import StudentBudget, load_target


@functools.cache
def _candidates(shape: tuple[int, ...], classes: int, max_params: int, family: str = "auto"):
    """enumerate_candidates, once per argument set in this module: sizing a 32x32 grid takes 10-25 s on a 2-core
    host, and several tests read the same grid (none changes it)."""
    return enumerate_candidates(shape, classes, StudentBudget(max_params=max_params, family=family))


@pytest.mark.parametrize("family", ["mobilenetv2", "resnet"])
def test_input_resize_runs_the_student_at_a_lower_resolution_on_data_of_full_size(family):
    full = build_model(family, (3, 32, 32), 10, width=0.5)
    small = build_model(family, (3, 32, 32), 10, width=0.5, resolution=16)
    assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_macs(small, (3, 32, 32)) < 0.4 * count_macs(full, (3, 32, 32))
    assert small.state_dict().keys() == full.state_dict().keys()
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in full.parameters())
    with pytest.raises(ValueError, match="resolution"):
        build_model(family, (3, 32, 32), 10, resolution=64)


@pytest.mark.slow  # 24 s CPU (--cpu-durations)
def test_candidates_span_families_width_depth_expand_and_resolution_inside_the_params_limit():
    cands, enumerated = _candidates((3, 32, 32), 10, 200_000)
    assert enumerated > len(cands) > 10
    assert all(c.params <= 200_000 for c in cands)
    assert {c.family for c in cands} == {"mobilenetv2", "resnet"}
    for family in ("mobilenetv2", "resnet"):
        mine = [c for c in cands if c.family == family]
        assert {c.config.get("resolution") for c in mine} == {None, 24, 16}
        assert {c.config["depth"] for c in mine} >= {1, 2}
    assert {c.config["expand"] for c in cands if c.family == "mobilenetv2"} == {2, 4, 6}
    assert max(c.config["width"] for c in cands) >= 2.5
    only, _ = _candidates((1, 8, 8), 10, 100_000, "mobilenetv2")
    assert {c.family for c in only} == {"mobilenetv2"}
    flat, _ = enumerate_candidates((20,), 3, StudentBudget(max_params=50_000, family="mlp"))
    assert flat and all(c.family == "mlp" for c in flat)
    assert {c.family for c in enumerate_candidates((20,), 3, StudentBudget(max_params=50_000))[0]} == {"mlp"}


def test_candidate_macs_from_the_feature_pass_equal_the_flop_counter():
    """One hooked pass sizes a candidate; its MACs must be exactly count_macs' (FlopCounterMode) for every family,
    resized or not."""
    cands, _ = _candidates((3, 32, 32), 10, 200_000)
    rng = np.random.default_rng(0)
    picked = [c for fam in ("mobilenetv2", "resnet") for c in
              rng.choice([c for c in cands if c.family == fam], 5, replace=False)]
    assert any("resolution" in c.config for c in picked)
    for c in picked:
        assert c.macs == count_macs(c.build((3, 32, 32), 10), (3, 32, 32)), c.name
    flat, _ = enumerate_candidates((20,), 3, StudentBudget(max_params=50_000))
    assert flat[0].macs == count_macs(flat[0].build((20,), 3), (20,))


def test_search_seeds_time_each_family_from_its_smallest():
    """Latency per MAC differs between families: the first timings include each family's smallest (its fastest
    candidate, so 'nothing fits' is never concluded from one family's timings) and spread over its MACs."""
    from edgekd.selection.search import _seeds

    cands, _ = _candidates((1, 8, 8), 10, 100_000)
    seeds = _seeds(cands, SEEDS)
    for family in ("mobilenetv2", "resnet"):
        mine = [c for c in cands if c.family == family]
        picked = [c for c in seeds if c.family == family]
        assert min(mine, key=lambda c: c.macs) in picked and max(mine, key=lambda c: c.macs) in picked
        assert len(picked) >= 2


def _synthetic_ms(cands):
    """A 'device' whose latency is per-layer linear: 0.05 ms + 2 ns per conv MAC + 5 us per layer."""
    x = feature_matrix(cands)
    return 0.05 + 2e-6 * (x[:, 1] + x[:, 2]) / 1e3 + 0.005 * x[:, 4]


@pytest.mark.slow  # 25 s CPU (--cpu-durations)
def test_nnls_predictor_is_non_negative_and_reports_its_leave_one_out_error():
    cands, _ = _candidates((1, 16, 16), 10, 300_000)
    y = _synthetic_ms(cands)
    pred = fit_predictor(cands[:10], list(y[:10]))
    assert pred is not None and (pred.coefficients >= 0).all()
    assert pred.loo_error_pct is not None and pred.loo_error_pct < 5
    assert np.median(np.abs(pred.predict(cands) - y) / y) < 0.05
    assert fit_predictor(cands[:2], list(y[:2])) is None


class FakeTimer(Timer):
    """Times nothing: the synthetic device above, with 1 % noise; the cache and counters are the real ones."""

    def measure(self, candidates):
        self._by_name = {**getattr(self, "_by_name", {}), **{c.name: c for c in candidates}}
        return super().measure(candidates)

    def _export_all(self, models, work):
        return {name: self._by_name[name] for name in models}

    def _time_local(self, exported, inputs):
        out = {}
        for name, cand in exported.items():
            ms = float(_synthetic_ms([cand])[0])
            out[name] = Timing(ms, ms * 1.05, ms * 1.1, ms * 1.2, 1.0, "fake 1.0")
        return out


def test_search_times_few_candidates_picks_the_most_capable_inside_the_budget_and_reuses_the_cache(tmp_path):
    target = load_target("x86-cpu")
    cands, _ = _candidates((1, 16, 16), 10, 300_000)
    calib = np.zeros((4, 1, 16, 16), np.float32)
    budget = float(np.median(_synthetic_ms(cands))) * 1.1
    timer = FakeTimer(target, (1, 16, 16), 10, calib, tmp_path)
    sel = select_by_latency(cands, timer, budget, 95, log=lambda m: None)
    assert timer.measured <= MAX_MEASURE < len(cands)
    p95 = {c.name: float(v) * 1.1 for c, v in zip(cands, _synthetic_ms(cands), strict=True)}
    chosen = sel.ranked[0]
    assert p95[chosen.name] * 1.01 <= budget
    # nothing that was timed inside the budget is more capable than the chosen one
    assert all(c.macs <= chosen.macs for c in sel.ranked)
    rows = {r["name"]: r for r in sel.record["candidates"]}
    assert rows[chosen.name]["status"] == "chosen" and len(rows) == len(cands)
    assert all(r["reason"] for r in rows.values())
    again = FakeTimer(target, (1, 16, 16), 10, calib, tmp_path)
    sel2 = select_by_latency(cands, again, budget, 95, log=lambda m: None)
    assert sel.timings[chosen.name].confirmed  # timed twice before it was chosen
    assert again.reused == len(sel.timings) and again.measured == 0  # confirmed in the cache: not timed again
    assert sel2.ranked[0].name == chosen.name


class LuckyTimer(FakeTimer):
    """The first reading of ``lucky`` comes at half its latency (a quiet moment on a shared host)."""

    lucky = ""

    def _time_local(self, exported, inputs):
        out = super()._time_local(exported, inputs)
        if self.lucky in out:
            t = out[self.lucky]
            out[self.lucky] = Timing(t.p50 / 2, t.p90 / 2, t.p95 / 2, t.p99 / 2, t.noise_pct, t.runtime_version)
            self.lucky = ""
        return out


def test_a_lucky_first_timing_does_not_choose_the_student(tmp_path):
    cands, _ = _candidates((1, 16, 16), 10, 300_000)
    p95 = {c.name: float(v) * 1.1 * 1.01 for c, v in zip(cands, _synthetic_ms(cands), strict=True)}
    largest = max(cands, key=lambda c: c.macs)  # a seed, and the most capable: chosen if its lucky reading stood
    budget = 0.75 * p95[largest.name]
    timer = LuckyTimer(load_target("x86-cpu"), (1, 16, 16), 10, np.zeros((4, 1, 16, 16), np.float32), None)
    timer.lucky = largest.name
    sel = select_by_latency(cands, timer, budget, 95, log=lambda m: None)
    chosen = sel.ranked[0]
    assert chosen is not largest and p95[chosen.name] <= budget  # its true latency fits
    assert sel.timings[chosen.name].confirmed and sel.timings[largest.name].confirmed
    rows = {r["name"]: r for r in sel.record["candidates"]}
    assert rows[largest.name]["status"] == "rejected" and "slower of two timings" in rows[largest.name]["reason"]
    assert rows[chosen.name]["status"] == "chosen" and sel.record["confirmations"] >= 2


class AlwaysLuckyTimer(FakeTimer):
    """Every candidate's first reading comes at half its latency; the second is the truth."""

    confirming = False

    def confirm(self, candidate, first):
        self.confirming = True
        try:
            return super().confirm(candidate, first)
        finally:
            self.confirming = False

    def _time_local(self, exported, inputs):
        out = super()._time_local(exported, inputs)
        if not self.confirming:
            out = {k: Timing(t.p50 / 2, t.p90 / 2, t.p95 / 2, t.p99 / 2, t.noise_pct, t.runtime_version)
                   for k, t in out.items()}
        return out


@pytest.mark.slow  # 20 s CPU (--cpu-durations)
def test_each_failed_confirmation_buys_the_search_more_timings():
    # One family at expand 4 (~70 candidates): on the whole grid every one of CONFIRM second timings can land on a
    # candidate between the budget and twice it (this timer's first readings are all half the truth).
    cands, _ = _candidates((1, 16, 16), 10, 300_000, "mobilenetv2")
    cands = [c for c in cands if c.config["expand"] == 4]
    p95 = {c.name: float(v) * 1.1 * 1.01 for c, v in zip(cands, _synthetic_ms(cands), strict=True)}
    budget = float(np.quantile(list(p95.values()), 0.4))
    timer = AlwaysLuckyTimer(load_target("x86-cpu"), (1, 16, 16), 10, np.zeros((4, 1, 16, 16), np.float32), None)
    sel = select_by_latency(cands, timer, budget, 95, max_measure=SEEDS + 1, log=lambda m: None)
    failed = sel.record["failed_confirmations"]
    assert failed >= 1 and sel.record["measure_cap"] == SEEDS + 1 + BATCH * failed
    assert timer.measured > SEEDS + 1  # the failed confirmations bought these
    chosen = sel.ranked[0]
    assert sel.timings[chosen.name].confirmed and p95[chosen.name] <= budget


def _target(tmp_path: Path, **student_budget) -> Path:
    raw = yaml.safe_load(Path(load_target("x86-cpu").path).read_text())
    raw["runtime"].update({"format": "onnx", "also": []})
    raw["student_budget"].update(student_budget)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_auto_selection_uses_latency_only_with_a_student_latency_budget(tmp_path):
    from edgekd.stages.context import BuildContext, BuildOptions
    from edgekd.stages.student import selection_mode
    from edgekd.targets import load_target as load
    from tests.conftest import make_dataset

    def mode(path, **options):
        return selection_mode(BuildContext(BuildOptions(target=str(path), **options), load(path), make_dataset(),
                                           tmp_path))[0]

    assert mode(_target(tmp_path)) == "mac"
    assert mode(_target(tmp_path, latency_ms=2.0), device="pi@board") == "latency"
    assert mode(_target(tmp_path, latency_ms=2.0), selection="mac") == "mac"
    jetson = load_target("jetson-orin-nano").path
    assert mode(jetson) == "mac"
    with pytest.raises(EdgekdError, match="tensorrt delegate"):
        mode(jetson, selection="latency")


@pytest.mark.slow  # 108 s CPU (--cpu-durations; 110 s wall at load 6)
def test_the_build_selects_under_the_stated_budget_times_the_headroom(tmp_path, monkeypatch):
    """The shipped model drifts from the random-weight timing (trained weights, float layers, host): candidates
    must fit budget x headroom, and the record keeps both numbers."""
    import edgekd.stages.student as student_stage
    from edgekd.stages.context import BuildContext, BuildOptions
    from edgekd.stages.student import ranked_by_latency
    from tests.conftest import make_dataset

    data = make_dataset()
    cands, _ = enumerate_candidates(data.input_shape, data.num_classes, StudentBudget(max_params=100_000))
    p95 = {c.name: float(v) * 1.1 for c, v in zip(cands, _synthetic_ms(cands), strict=True)}
    largest = max(cands, key=lambda c: c.macs)
    stated = p95[largest.name] * 1.01 * 1.002  # the most capable fits the stated budget, not 0.99 of it
    monkeypatch.setattr(student_stage, "Timer", FakeTimer)  # where the stage looks it up
    path = _target(tmp_path, latency_ms=stated, latency_headroom=0.99, max_params=100_000)
    ctx = BuildContext(BuildOptions(target=str(path), teacher_cache=str(tmp_path)), load_target(str(path)), data,
                       tmp_path)
    ranked, record = ranked_by_latency(ctx, "test")
    assert record["stated_budget_ms"] == stated and record["headroom"] == 0.99
    assert record["budget_ms"] == pytest.approx(stated * 0.99)
    assert ranked and all(p95[candidate_name(r.family, r.config)] * 1.01 <= stated * 0.99 for r in ranked)
    without = select_by_latency(cands, FakeTimer(ctx.target, data.input_shape, data.num_classes, data.x_train[:4],
                                                 None), stated, 95, log=lambda m: None).ranked[0]
    assert without.macs > ranked[0].macs  # the headroom changed the choice: the bigger one fits only the stated


def test_gate_skips_the_mac_check_without_a_mac_limit():
    from edgekd.gate import evaluate_gate
    from tests.factories import make_report

    target = load_target("x86-cpu")
    free = target.model_copy(update={"student_budget": target.student_budget.model_copy(update={"max_macs": None})})
    assert "macs" in {c.name for c in evaluate_gate(make_report(), target).checks}
    assert "macs" not in {c.name for c in evaluate_gate(make_report(), free).checks}


def test_a_build_whose_students_all_fail_the_delegate_stops_in_preflight(tmp_path, monkeypatch):
    """The delegate's operator list lacks Conv: every CNN student falls back, and the target requires full
    delegation. The build must stop in pre-flight (exit 2, clear message) before any teacher is trained: that, not a
    wall-clock limit (a timed unit test fails on a busy host), is what shows it stopped early."""
    from edgekd import compat
    from edgekd.cli import main

    ops = tmp_path / "ops"
    shutil.copytree(compat.DATA_DIR, ops)
    spec = yaml.safe_load((ops / "ops_tensorrt.yaml").read_text())
    spec["supported"] = [op for op in spec["supported"] if op != "Conv"]
    (ops / "ops_tensorrt.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setattr(compat, "DATA_DIR", ops)
    compat.load_delegate.cache_clear()
    raw = yaml.safe_load(Path(load_target("jetson-orin-nano").path).read_text())
    raw.update(name="no-conv-board")
    path = tmp_path / "no-conv.yaml"
    path.write_text(yaml.safe_dump(raw))
    cache = tmp_path / "cache"
    try:
        code = main(["build", "--target", str(path), "--data", "digits", "--out", str(tmp_path / "run"),
                     "--cache-dir", str(cache), "--no-progress"])
    finally:
        compat.load_delegate.cache_clear()
    assert code == 2
    assert not (tmp_path / "run").exists()
    assert not list(cache.rglob("*.pt"))  # no teacher was trained (or cached)


def test_sizes_counted_on_the_meta_device_equal_those_of_the_real_network():
    from edgekd.models.budget import count_params, size_of
    from edgekd.selection.candidates import layer_features

    for family, config in (("mobilenetv2", {"width": 0.5, "depth": 2}),
                           ("mobilenetv2", {"width": 1.0, "depth": 1, "expand": 6, "resolution": 24}),
                           ("resnet", {"width": 0.5, "depth": 2, "resolution": 16})):
        real = build_model(family, (3, 32, 32), 10, **config)
        assert size_of(family, (3, 32, 32), 10, config) == (count_params(real), count_macs(real, (3, 32, 32)))
        with torch.device("meta"):
            meta = layer_features(build_model(family, (3, 32, 32), 10, **config), (3, 32, 32))
        assert meta == layer_features(real, (3, 32, 32))
    mlp = build_model("mlp", (20,), 3, hidden=(64, 32))
    assert size_of("mlp", (20,), 3, {"hidden": (64, 32)}) == (count_params(mlp), count_macs(mlp, (20,)))


def _loopback_device(tmp_path: Path, monkeypatch, seen: list[list[str]]) -> None:
    """ssh/scp to a 'device' that is this machine: each ssh command runs in a shell here, scp copies; the device's
    python3 is this venv's (numpy and the runtimes). No sshd needed; everything else of the remote path is real."""
    import os
    import subprocess
    import sys

    import edgekd.bench as bench

    shim = tmp_path / "device-bin"
    shim.mkdir()
    (shim / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # a symlink would lose the venv
    (shim / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path)}

    def run(args, timeout):
        seen.append(args)
        if args[0] == "scp":
            src, dest = args[-2], args[-1].split(":", 1)[1]
            shutil.copy2(src, dest)
            return subprocess.CompletedProcess(args, 0, "", "")
        return subprocess.run(["bash", "-c", args[-1]], capture_output=True, text=True, timeout=timeout, env=env)

    monkeypatch.setattr(bench, "_run", run)


def test_device_timing_runs_the_runner_on_the_device_and_caches_under_its_name(tmp_path, monkeypatch):
    seen: list[list[str]] = []
    _loopback_device(tmp_path, monkeypatch, seen)
    target = load_target(str(_target(tmp_path, max_params=20_000)))
    cands, _ = enumerate_candidates((1, 8, 8), 3, StudentBudget(max_params=20_000))
    picked = sorted(cands, key=lambda c: c.macs)[:2]
    timer = Timer(target, (1, 8, 8), 3, np.random.default_rng(0).normal(size=(64, 1, 8, 8)).astype(np.float32),
                  tmp_path / "cache", device="pi@board")
    timings = timer.measure(picked)
    assert set(timings) == {c.name for c in picked} and not timer.failures
    assert all(t.p50 > 0 and t.runtime_version.startswith("onnxruntime") for t in timings.values())
    assert timer.where == "pi@board over SSH" and not timer.host_proxy
    assert all(isinstance(a, list) and a[0] in ("ssh", "scp") for a in seen)  # argument lists, no local shell
    assert any("runner.py" in a[-1] for a in seen if a[0] == "ssh")
    assert not list(tmp_path.glob("edgekd-bench.*"))  # the device's work directory was removed
    again = Timer(target, (1, 8, 8), 3, timer.calibration, tmp_path / "cache", device="pi@board")
    assert all(again.cached(c) is not None for c in picked)
    elsewhere = Timer(target, (1, 8, 8), 3, timer.calibration, tmp_path / "cache", device="pi@other")
    assert all(elsewhere.cached(c) is None for c in picked)  # another device's timings are not this one's


def test_cli_refuses_a_device_that_ssh_could_read_as_an_option(capsys):
    from edgekd.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["build", "--target", "x86-cpu", "--device", "-oProxyCommand=touch /tmp/x", "--selection", "latency"])
    assert exc.value.code == 2
    assert "is not USER@HOST" in capsys.readouterr().err


def test_the_report_shows_every_candidate_the_plot_and_predicted_vs_measured(tmp_path):
    from edgekd.models.budget import StudentChoice
    from edgekd.render_html import render_html
    from edgekd.render_md import render_markdown
    from edgekd.schema import ArtifactRow, Report, dump
    from edgekd.stages.report import selection_section
    from tests.factories import make_report

    cands, _ = _candidates((1, 8, 8), 10, 100_000)
    timer = FakeTimer(load_target("x86-cpu"), (1, 8, 8), 10, np.zeros((4, 1, 8, 8), np.float32), None)
    stated = float(np.median(_synthetic_ms(cands))) * 1.4  # x 0.8 headroom: about half the candidates fit
    sel = select_by_latency(cands, timer, stated * 0.8, 95, log=lambda m: None)
    record = {**sel.record, "why": "test", "budget_source": "student_budget.latency_ms", "stated_budget_ms": stated,
              "headroom": 0.8, "preflight": [
        {"name": sel.ranked[0].name, "passed": True, "reason": "", "seconds": 1.0, "artifacts": [
            {"format": "onnx", "precision": "int8"}]}]}
    report = make_report()
    shipped = next(a for a in report["artifacts"] if a.get("shipped", True))
    record["format"] = shipped["format"]
    c = sel.ranked[0]
    choice = StudentChoice(c.family, c.config, c.params, c.macs, 100_000, None, 1, 1, selection=record)
    report["student"]["selection"] = dump(selection_section(choice, [ArtifactRow.model_validate(shipped)]))
    Report.model_validate(report)
    shipped_prediction = report["student"]["selection"]["shipped_prediction"]
    assert shipped_prediction["measured_ms"] == shipped["latency_ms"]["p95"]
    timed = next(r for r in record["candidates"] if r["status"] == "chosen")["latency_ms"]["value"]
    assert shipped_prediction["drift_pct"] == pytest.approx(100 * (shipped["latency_ms"]["p95"] - timed) / timed)
    assert shipped_prediction["meets_stated_budget"] == (shipped["latency_ms"]["p95"] <= stated)
    md = render_markdown(report)
    assert all(row["name"] in md for row in record["candidates"]) and "Pre-flight" in md
    assert "stated x headroom 0.8" in md and "drift from selection" in md
    page = render_html(report)
    assert "Student selection" in page and "latency vs capacity" in page


def test_a_fitting_student_the_latency_search_never_timed_is_timed_and_becomes_a_finalist(tmp_path):
    """Issue 30: the MAC-selected student fitted the budget but was never chosen for lack of a timing."""
    from edgekd.selection.finalists import fitting_from_record, of_candidate, pick, time_candidates

    cands, _ = _candidates((1, 16, 16), 10, 300_000)
    ms = dict(zip((c.name for c in cands), _synthetic_ms(cands), strict=True))
    budget = float(np.median(list(ms.values()))) * 1.1
    timer = FakeTimer(load_target("x86-cpu"), (1, 16, 16), 10, np.zeros((4, 1, 16, 16), np.float32), tmp_path)
    sel = select_by_latency(cands, timer, budget, 95, log=lambda m: None)
    fits = [c for c in cands if ms[c.name] * 1.1 * 1.01 <= budget]
    untimed = [c for c in fits if c.name not in sel.timings]
    assert untimed  # the latency search stops once nothing untimed beats its choice by capacity
    mac = min(untimed, key=lambda c: c.macs)  # stands in for the MAC rule's pick: fits, never timed
    chosen = sel.ranked[0]
    timed = time_candidates(cands, sel, timer, budget, 95, [mac])
    assert mac.name in timed and mac.name in sel.timings and sel.ranked[0] is chosen  # the latency choice stands
    rows = {r["name"]: r for r in sel.record["candidates"]}
    assert rows[mac.name]["latency_ms"]["source"] == "measured" and rows[mac.name]["status"] == "accepted"
    fitting = fitting_from_record(sel.record)
    assert {mac.name, chosen.name} <= {f.name for f in fitting}
    finalists = pick(of_candidate(sel.ranked[0], "latency rule"), fitting, of_candidate(mac))
    assert finalists[0].name == sel.ranked[0].name and finalists[1].name == mac.name
    groups = {(f.family, f.config.get("resolution"), f.config.get("depth")) for f in finalists}
    assert len({f.family for f in finalists}) == 2 and len(groups) >= 3  # families, resolutions, depths


@pytest.mark.slow
def test_an_auto_build_ranks_its_finalists_by_proxy_accuracy_and_says_which_rule_chose(tmp_path):
    """--selection auto on digits (MAC budget: the target states no student latency budget): the accuracy search
    runs inside its cost cap, the student shipped is the one it chose, the report says which rule chose and why."""
    from edgekd.api import BuildOptions, build

    path = _target(tmp_path, latency_ms=None, max_params=40_000)
    lines: list[str] = []
    report = build(BuildOptions(target=str(path), data="digits", out=tmp_path / "run", epochs=6, teacher_epochs=4,
                                runs=20, warmup=2, progress=False, teacher_cache=None, log=lines.append)).report
    sel = report["student"]["selection"]
    acc = sel["accuracy"]
    assert sel["mode"] == "mac" and sel["chosen_by"] in ("mac", "accuracy") and sel["chosen_why"]
    assert acc["pct_of_build"] <= 100 * acc["share"] + 5 and acc["time_s"] <= acc["cap_s"] * 2 + 1
    if acc["ran"]:
        chosen = next(c for c in acc["candidates"] if c["status"] == "chosen")
        assert report["student"]["config"] == chosen["config"] and len(acc["candidates"]) >= 2
    md = (tmp_path / "run" / "report.md").read_text()
    assert f"Chosen by {sel['chosen_by']}" in md
    assert "Accuracy search" in (tmp_path / "run" / "report.html").read_text()


def test_a_timing_is_the_median_of_its_fresh_processes():
    """One process's jittery p95 (0.31 ms) neither moves the candidate across a budget line nor hides it."""
    lat = {"p50": 0.11, "p90": 0.2, "p95": 0.31, "p99": 0.5, "noise_pct": 40.0,
           "processes": [{"p5": 0.1, "p50": 0.11, "p95": 0.31}, {"p5": 0.1, "p50": 0.1, "p95": 0.16},
                         {"p5": 0.1, "p50": 0.12, "p95": 0.17}]}
    t = _timing(lat, "openvino 2026")
    assert (t.p50, t.p95, t.p90, t.p99) == (0.11, 0.17, 0.2, 0.5)
    single = _timing({k: v for k, v in lat.items() if k != "processes"}, "openvino 2026")
    assert single.p95 == 0.31  # a runner that timed one process: its own quantiles
