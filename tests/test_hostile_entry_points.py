"""Hostile inputs at every entry point (issue 11): build, calibrate, bundle, bench, gate and the runner.

Each case hands a command something a careless colleague or an attacker could: a report.json with NaN or negative
numbers, a tampered artifact, a manifest that does not hash what it ships, a host spec that smuggles an option, a
--out full of someone's files, a target named '..', a count that would run for days. Each must end with exit 2,
one message (problem + fix), no traceback, and no file created, changed or removed. The data readers' own cases
live in test_hostile_inputs.py; this file covers what comes after the data. All in-process and fast: the run
directory is test_bundle's tiny fixture (two small exports, made once per session) copied per case.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from factories import make_report
from test_bundle import make_run_dir
from test_hostile_inputs import snapshot

from edgekd import bench, runner
from edgekd.cli import main
from edgekd.errors import EdgekdError
from edgekd.rundir import MARKER, _lock, home_of
from edgekd.targets import load_target


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.getbasetemp())


@pytest.fixture
def run(fixture_run, tmp_path) -> Path:
    """A fresh copy of the fixture run per case, so tampering never leaks into another test."""
    copy_ = tmp_path / "run"
    shutil.copytree(fixture_run, copy_)
    return copy_


def assert_one_message(code: int, err: str, match: str, prefix: str = "edgekd: error: ") -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if prefix.startswith("edgekd"):  # progress lines may come first ("target: ..."); the error is one + its fix
        assert sum(line.startswith(prefix) for line in lines) == 1, err
        assert lines[-2].startswith(prefix) and lines[-1].startswith("  fix: "), err
    else:
        assert len(lines) == 1 and lines[0].startswith(prefix), err
    assert match in err, err


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    value = _json(path)
    edit(value)
    path.write_text(json.dumps(value))


def _target_yaml(tmp_path: Path, name: str) -> str:
    raw = yaml.safe_load(open(load_target("x86-cpu").path))
    raw["name"] = name
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


# ------------------------------------------------------------------------------------------------ build / calibrate
@dataclass
class Case:
    id: str
    args: Callable[[Path], list[str]]  # made under tmp_path; returns the command line
    match: str


def _user_folder(tmp_path: Path, marker: str | None = None) -> Path:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"mine")
    if marker is not None:
        (out / MARKER).write_text(marker)
    return out


def bomb_npz(path: Path, descr: str = "<f4") -> Path:
    """An .npz whose x.npy header declares 10^18 values over 16 bytes of data."""
    import zipfile

    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': (1000000000, 1000000000), }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    member = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 16
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", member)
    return path


def _object_npz(path: Path) -> Path:
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    return path


BUILD = ["build", "--target", "x86-cpu", "--no-progress"]


def _file(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _distill(text: str) -> Callable[[Path], list[str]]:
    return lambda t: [*BUILD, "--distill-config", _file(t / "d.yaml", text)]


# Ten thousand levels and more: json and PyYAML recurse once per level (a RecursionError, not a message).
DEEP_JSON = "[" * 50_000 + "]" * 50_000
DEEP_OBJECT = '{"a": ' * 50_000 + "1" + "}" * 50_000
DEEP_YAML = "epochs: " + "[" * 50_000 + "]" * 50_000
# "Billion laughs": each line repeats the one before nine times through aliases, 9^9 values from ten lines.
YAML_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))
NO_CUDA = pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this host has CUDA")

BUILD_CASES = [
    Case("target-name-dot", lambda t: ["build", "--target", _target_yaml(t, "."), "--no-progress"], "name"),
    Case("target-name-dotdot", lambda t: ["build", "--target", _target_yaml(t, ".."), "--no-progress"], "slug"),
    Case("target-name-slash", lambda t: ["build", "--target", _target_yaml(t, "a/../b"), "--no-progress"], "slug"),
    Case("target-name-newline", lambda t: ["build", "--target", _target_yaml(t, "x\nrm"), "--no-progress"], "slug"),
    Case("out-with-user-file", lambda t: [*BUILD, "--out", str(_user_folder(t))], "not an edgekd run"),
    Case("out-with-forged-marker", lambda t: [*BUILD, "--out", str(_user_folder(t, '{"edgekd_run": 2}'))],
         "not an edgekd run"),
    Case("out-is-a-file", lambda t: [*BUILD, "--out", str(_user_folder(t) / "holiday.jpg")], "is a file"),
    Case("out-is-root", lambda t: [*BUILD, "--out", "/"], "no directory name"),
    Case("out-is-cwd-parent", lambda t: [*BUILD, "--out", str(_user_folder(t) / "..")], "not an edgekd run"),
    Case("huge-runs", lambda t: [*BUILD, "--runs", str(10**12)], "--runs 1000000000000 is outside"),
    Case("negative-warmup", lambda t: [*BUILD, "--warmup", "-1"], "--warmup -1 is outside"),
    Case("huge-epochs", lambda t: [*BUILD, "--epochs", str(10**9)], "--epochs"),
    Case("huge-prune-steps", lambda t: [*BUILD, "--prune-steps", str(10**6)], "--prune-steps"),
    Case("calibration-header-bomb", lambda t: [*BUILD, "--calibration", str(bomb_npz(t / "c.npz"))], "declares"),
    Case("calibration-object-array", lambda t: [*BUILD, "--calibration", str(_object_npz(t / "c.npz"))], "dtype"),
    Case("calibrate-huge-samples", lambda t: ["calibrate", "--target", "x86-cpu", "--samples", str(10**10)],
         "--samples"),
    Case("calibrate-target-dotdot", lambda t: ["calibrate", "--target", _target_yaml(t, "..")], "slug"),
    # issue 27: the --distill-config YAML is read through the same limits and validated with the flags' caps
    Case("distill-config-deeply-nested", _distill(DEEP_YAML), "nests more than 100 levels deep"),
    Case("distill-config-alias-bomb", _distill(YAML_BOMB), "expands to more than 1,000,000 values"),
    Case("distill-config-alias-cycle", _distill("loss_options: &a {x: *a}"), "holds itself through an alias"),
    Case("target-alias-bomb", lambda t: [*BUILD[:2], _file(t / "t.yaml", YAML_BOMB), "--no-progress"],
         "expands to more than 1,000,000 values"),
    Case("distill-config-huge-epochs", _distill("epochs: 1000000000000"),
         "epochs = 1000000000000 is outside the accepted range 1..10,000"),
    Case("distill-config-huge-batch", _distill("batch_size: 1000000000"), "batch_size = 1000000000 is outside"),
    Case("distill-config-nan-lr", _distill("lr: .nan"), "lr = nan"),
    pytest.param(Case("distill-config-cuda-without-cuda", _distill("device: cuda"),
                      "training device 'cuda': this host has no cuda device"), marks=NO_CUDA),
    Case("distill-config-missing-gpu", _distill("device: 'cuda:99'"), "training device 'cuda:99'"),
    Case("target-deeply-nested", lambda t: [*BUILD[:2], _file(t / "t.yaml", DEEP_YAML), "--no-progress"],
         "nests more than 100 levels deep"),
    Case("target-bad-tagged-scalar", lambda t: [*BUILD[:2], _file(t / "t.yaml", "name: !!int 0x"), "--no-progress"],
         "holds a value YAML cannot convert"),
]


@pytest.mark.parametrize("case", BUILD_CASES, ids=lambda c: c.id)
def test_build_and_calibrate_refuse_before_any_work(case: Case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = case.args(tmp_path)
    before = snapshot(tmp_path)
    code = main(args)
    assert_one_message(code, capsys.readouterr().err, case.match)
    assert snapshot(tmp_path) == before, "nothing written, changed or removed"
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob(".*.edgekd"))


def test_second_build_into_a_locked_out_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    fd = _lock(home_of(out), out)  # another build holds it
    try:
        code = main([*BUILD, "--out", str(out), "--data", "digits"])
    finally:
        import os

        os.close(fd)
    assert_one_message(code, capsys.readouterr().err, "another edgekd build is writing")
    assert not out.exists()


# ------------------------------------------------------------------------------------------------------------ gate
def _report_with(edit: Callable[[dict], None]) -> dict:
    report = copy.deepcopy(make_report())
    edit(report)
    return report


def _first(key: str, value) -> Callable[[dict], None]:
    return lambda r: r["artifacts"][0].__setitem__(key, value)


GATE_CASES = [
    ("nan-latency", lambda r: r["artifacts"][0]["latency_ms"].__setitem__("p95", float("nan")), "finite"),
    ("inf-latency", lambda r: r["artifacts"][0]["latency_ms"].__setitem__("p50", float("inf")), "finite"),
    ("negative-size", _first("size_bytes", -5), "greater than or equal to 0"),
    ("null-accuracy-shipped", _first("accuracy", None), "a missing value is a failure"),
    ("accuracy-above-one", _first("accuracy", 1.5), "less than or equal to 1"),
    ("accuracy-as-text", _first("accuracy", "0.99"), "accuracy"),
    ("nothing-shipped", lambda r: [a.__setitem__("shipped", False) for a in r["artifacts"]], "no artifact"),
    ("target-traversal", lambda r: r.__setitem__("target", "../../etc"), "target"),
    ("artifact-path-traversal", _first("path", "../../model.onnx"), "not a plain file name"),
    ("bad-sha256", _first("sha256", "z" * 64), "sha256"),
    # found by tests/test_property_readers.py (issue 27): fields the gate reads must be typed in the schema
    ("cpu-flags-not-names", lambda r: r["measured_on"].__setitem__("cpu_flags", [None]), "cpu_flags"),
    ("cpu-flags-a-number", lambda r: r["measured_on"].__setitem__("cpu_flags", 1), "cpu_flags"),
]


@pytest.mark.parametrize(("case_id", "edit", "match"), GATE_CASES, ids=[c[0] for c in GATE_CASES])
def test_gate_refuses_a_hostile_report(case_id, edit, match, tmp_path, capsys):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_report_with(edit)))  # json.dumps writes NaN/Infinity, as a hostile file may
    before = snapshot(tmp_path)
    code = main(["gate", str(path), "--target", "x86-cpu"])
    assert_one_message(code, capsys.readouterr().err, match)
    assert snapshot(tmp_path) == before


def test_gate_refuses_a_baseline_whose_block_count_is_not_a_count(tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(make_report()))
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(_report_with(lambda r: r["artifacts"][0]["latency_ms_detail"].update(blocks="x"))))
    code = main(["gate", str(report), "--target", "x86-cpu", "--baseline", str(baseline)])
    assert_one_message(code, capsys.readouterr().err, "blocks")


def test_gate_refuses_a_report_that_is_a_list(tmp_path, capsys):
    path = tmp_path / "report.json"
    path.write_text("[1, 2]")
    assert_one_message(main(["gate", str(path)]), capsys.readouterr().err, "not a JSON object")


# ---------------------------------------------------------------------------------------------- bundle and bench
def _tamper_artifact(run: Path) -> None:
    with open(run / "model_fp32.onnx", "ab") as fh:
        fh.write(b"\0")


def _tamper_consistently(run: Path) -> None:
    """The artifact changed and the manifest rewritten to match: only report.json still holds the judged sha256."""
    import hashlib

    _tamper_artifact(run)
    sha = hashlib.sha256((run / "model_fp32.onnx").read_bytes()).hexdigest()

    def edit(m):
        entry = next(e for e in m["artifacts"] if e["path"] == "model_fp32.onnx")
        entry["sha256"] = entry["files"][0]["sha256"] = sha
    _edit_json(run / "manifest.json", edit)


def _unhash_artifact(run: Path) -> None:
    def edit(m):
        entry = next(e for e in m["artifacts"] if e["path"] == "model_fp32.onnx")
        entry["files"] = [{"path": "eval.npz", "sha256": m["eval_inputs"]["sha256"]}]
    _edit_json(run / "manifest.json", edit)


def _manifest_traversal(run: Path) -> None:
    _edit_json(run / "manifest.json", lambda m: m["artifacts"][0]["files"][0].__setitem__("path", "../../x.onnx"))


def _report_nan(run: Path) -> None:
    _edit_json(run / "report.json", lambda r: r["artifacts"][0].__setitem__("size_bytes", -1))


RUN_CASES = [
    ("bundle", "tampered-artifact", _tamper_artifact, "does not match the sha256"),
    ("bundle", "manifest-rewritten-to-match", _tamper_consistently, "changed after the build"),
    ("bundle", "manifest-missing-artifact", _unhash_artifact, "do not include the artifact itself"),
    ("bundle", "manifest-path-traversal", _manifest_traversal, "not a plain file name"),
    ("bundle", "report-negative-size", _report_nan, "greater than or equal to 0"),
    ("bench", "manifest-rewritten-to-match", _tamper_consistently, "changed after the build"),
    ("bench", "report-negative-size", _report_nan, "greater than or equal to 0"),
]


@pytest.mark.parametrize(("command", "case_id", "tamper", "match"), RUN_CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in RUN_CASES])
def test_bundle_and_bench_refuse_a_changed_run(command, case_id, tamper, match, run, tmp_path, capsys):
    tamper(run)
    before = snapshot(tmp_path)
    args = ["bundle", str(run), "--out", str(tmp_path / "b")] if command == "bundle" else ["bench", str(run)]
    assert_one_message(main(args), capsys.readouterr().err, match)
    assert snapshot(tmp_path) == before


def test_bundle_refuses_to_replace_a_user_folder(run, tmp_path, capsys):
    out = _user_folder(tmp_path)
    before = snapshot(tmp_path)
    assert_one_message(main(["bundle", str(run), "--out", str(out)]), capsys.readouterr().err, "not an edgekd bundle")
    assert snapshot(tmp_path) == before


BENCH_REMOTE_CASES = [
    ("trailing-newline", ["--remote", "pi@host\n"], "is not USER@HOST"),
    ("option-as-host", ["--remote=-oProxyCommand=touch /tmp/pwned"], "is not USER@HOST"),
    ("option-as-user", ["--remote=-F@host"], "is not USER@HOST"),
    ("space-in-host", ["--remote", "pi@host touch"], "is not USER@HOST"),
    ("duplicate-after-normalising", ["--remote", "pi@Host.", "--remote", "pi@host:22"], "are the same device"),
    ("duplicate-ipv6", ["--remote", "pi@[::1]", "--remote", "pi@[0:0::1]:22"], "are the same device"),
    ("option-like-ssh-option", ["--remote", "pi@h", "--ssh-option=-F/tmp/evil"], "not an ssh option"),
    ("option-like-python", ["--remote", "pi@h", "--remote-python=-c"], "is not a program path"),
    ("too-many-hosts", [a for i in range(65) for a in ("--remote", f"pi@h{i}")], "--remote 65 is outside"),
    ("huge-runs", ["--runs", str(10**9)], "--runs 1000000000 is outside"),
    ("zero-threads", ["--threads", "0"], "--threads 0 is outside"),
]


@pytest.mark.parametrize(("case_id", "extra", "match"), BENCH_REMOTE_CASES, ids=[c[0] for c in BENCH_REMOTE_CASES])
def test_bench_refuses_hostile_hosts_and_counts(case_id, extra, match, run, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(bench, "_run", lambda args, timeout: calls.append(args))
    before = snapshot(tmp_path)
    assert_one_message(main(["bench", str(run), *extra]), capsys.readouterr().err, match)
    assert calls == [], "no ssh/scp was started"
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------------------- runner
def _runner_args(run: Path, artifact: str = "model_fp32.onnx", *extra: str) -> list[str]:
    return [str(run / artifact), "--inputs", str(run / "eval.npz"), "--no-memory", "--runs", "5", "--warmup", "1",
            "--min-time", "0", *extra]


def _eval_labels_changed(run: Path) -> None:
    with np.load(run / "eval.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["y"] = arrays["teacher_logits"].argmax(1)  # "perfect" accuracy, forged
    np.savez(run / "eval.npz", **arrays)


def _npz_header_bomb(run: Path) -> None:
    bomb_npz(run / "eval.npz")
    _edit_json(run / "manifest.json", lambda m: m.__setitem__("eval_inputs", {**m["eval_inputs"], "path": "o.npz"}))


def _unhash_bin(run: Path) -> None:
    def edit(m):
        entry = next(e for e in m["artifacts"] if e["path"] == "model_fp32.xml")
        entry["files"] = [f for f in entry["files"] if f["path"] != "model_fp32.bin"]
    _edit_json(run / "manifest.json", edit)


RUNNER_CASES = [
    ("tampered-artifact", _tamper_artifact, [], "sha256 mismatch for model_fp32.onnx"),
    ("manifest-missing-artifact", _unhash_artifact, [], "does not hash model_fp32.onnx"),
    ("manifest-missing-weights", _unhash_bin, ["model_fp32.xml"], "does not hash model_fp32.bin"),
    ("manifest-traversal", _manifest_traversal, [], "which is not a file beside it"),
    ("manifest-is-a-list", lambda r: (r / "manifest.json").write_text("[]"), [], "not an edgekd manifest"),
    ("manifest-deeply-nested", lambda r: (r / "manifest.json").write_text(DEEP_OBJECT), [],
     "nests more than 100 levels deep"),
    ("manifest-brackets-in-strings", lambda r: (r / "manifest.json").write_text(json.dumps(["[" * 50_000])), [],
     "not an edgekd manifest"),  # brackets inside a string are text, not nesting: read, then refused as a list
    ("eval-labels-forged", _eval_labels_changed, [], "evaluation inputs were changed"),
    ("npz-header-bomb", _npz_header_bomb, [], "declares shape"),
    ("huge-runs", lambda r: None, ["model_fp32.onnx", "--runs", str(10**9)], "--runs 1000000000 is more than"),
    ("huge-threads", lambda r: None, ["model_fp32.onnx", "--threads", "100000"], "--threads 100000 is more than"),
]


@pytest.mark.parametrize(("case_id", "tamper", "extra", "match"), RUNNER_CASES, ids=[c[0] for c in RUNNER_CASES])
def test_runner_refuses(case_id, tamper, extra, match, run, tmp_path, capsys):
    tamper(run)
    before = snapshot(tmp_path)
    artifact, *rest = extra or ["model_fp32.onnx"]
    code = runner.main([*_runner_args(run, artifact), *rest, "--json", str(tmp_path / "r.json")])
    assert_one_message(code, capsys.readouterr().err, match, prefix="runner error: ")
    assert snapshot(tmp_path) == before, "no result file, no change to the run"


def test_runner_loads_the_bytes_it_verified(run, monkeypatch):
    """A file swapped after the hash check is never loaded: the session gets the verified bytes."""
    real = runner.verify_artifact

    def verify_then_swap(artifact):
        verified = real(artifact)
        Path(artifact).write_bytes(b"swapped after the check")
        return verified

    monkeypatch.setattr(runner, "verify_artifact", verify_then_swap)
    result = runner.benchmark(str(run / "model_fp32.onnx"), str(run / "eval.npz"), runs=3, warmup=0, min_time_s=0,
                              memory=False)
    assert result["sha256_verified"] and result["inputs_verified"] and result["accuracy"] == pytest.approx(34 / 40)


# ------------------------------------------------------------------------------------------------ device replies
def _device_result(run: Path) -> dict:
    return runner.benchmark(str(run / "model_fp32.onnx"), str(run / "eval.npz"), runs=3, warmup=0, min_time_s=0,
                            memory=False)


def _fake_ssh(replies: dict[str, str], seen: list[list[str]], work_dir: str = "/tmp/edgekd-bench.Ab12Cd"):
    """Stand-in for ssh/scp: mktemp, copy and run succeed; ``cat result.json`` answers the host's reply."""
    import subprocess

    def run(args, timeout):
        seen.append(args)
        host = next(a for a in args if "@" in a or a in replies).split(":")[0]
        command = args[-1]
        out = work_dir if "mktemp" in command else replies[host] if command.startswith("cat ") else ""
        return subprocess.CompletedProcess(args, 0, out, "")
    return run


def test_a_malformed_device_reply_is_that_hosts_error_and_the_others_merge(run, monkeypatch, capsys):
    good = json.dumps(_device_result(run))
    bad = json.loads(good)
    bad["latency_ms"]["p95"] = -1.0
    seen: list[list[str]] = []
    monkeypatch.setattr(bench, "_run", _fake_ssh({"pi@good": good, "pi@bad": json.dumps(bad)}, seen))
    done = {r.remote: r for r in bench.bench_remote(run, ["pi@good", "pi@bad"], log=lambda m: None)}
    assert done["pi@good"].ok
    assert not done["pi@bad"].ok and "greater than or equal to 0" in done["pi@bad"].error
    merged = _json(run / "report.json")["device_results"]
    assert [e["remote"] for e in merged] == ["pi@good"] and merged[0]["artifacts"][0]["path"] == "model_fp32.onnx"


@pytest.mark.parametrize("reply", ["not json", "[1, 2]", '{"results": "x"}', '{"results": [{"artifact": 1}]}',
                                   "[" * 50_000 + "]" * 50_000])  # a reply nested past any parser's recursion
def test_unreadable_device_replies_are_host_errors(reply, run, monkeypatch):
    before = _json(run / "report.json")
    monkeypatch.setattr(bench, "_run", _fake_ssh({"pi@a": reply}, []))
    [done] = bench.bench_remote(run, ["pi@a"], log=lambda m: None)
    assert not done.ok and done.error.startswith("pi@a:")
    assert _json(run / "report.json") == before


@pytest.mark.parametrize("work_dir", ["/", "/tmp", "/home/pi", "/tmp/../etc/edgekd-bench.AbCdEf", "~",
                                      "/tmp/edgekd-bench.Ab12Cd\n/"])
def test_remote_work_dir_is_validated_before_rm(work_dir, run, monkeypatch):
    seen: list[list[str]] = []
    monkeypatch.setattr(bench, "_run", _fake_ssh({"pi@a": "{}"}, seen, work_dir))
    [done] = bench.bench_remote(run, ["pi@a"], log=lambda m: None)
    assert not done.ok and "unusable directory" in done.error
    assert not any("rm -rf" in " ".join(a) for a in seen), "nothing was removed on the device"


def test_device_rows_scored_on_other_inputs_never_reach_the_gate(run):
    result = _device_result(run)
    report = _json(run / "report.json")
    entry = bench.device_entry("pi@a", [{**result, "inputs_sha256": "f" * 64}], [], None)
    [merged] = bench.merge_device_results(report, [entry])["device_results"]
    assert merged["artifacts"] == [] and "not the report's eval.npz" in merged["left_out"][0]["why"]


# ------------------------------------------------------------------------------------------ issue 27, round two
def test_gate_refuses_deeply_nested_reports_and_baselines(tmp_path, capsys):
    """Class 1: a report or baseline of 50,000 nested levels is one message (exit 2), not a RecursionError."""
    deep = Path(_file(tmp_path / "deep.json", DEEP_JSON))
    good = Path(_file(tmp_path / "report.json", json.dumps(make_report())))
    before = snapshot(tmp_path)
    assert_one_message(main(["gate", str(deep), "--target", "x86-cpu"]), capsys.readouterr().err,
                       "nests 50,000 levels deep, more than the 100")
    assert_one_message(main(["gate", str(good), "--target", "x86-cpu", "--baseline", str(deep)]),
                       capsys.readouterr().err, "nests 50,000 levels deep")
    assert snapshot(tmp_path) == before


def test_teacher_config_flag_refuses_deep_nesting(tmp_path, monkeypatch, capsys):
    """Class 1: --teacher-config is parsed by argparse, which reports the problem (exit 2) before anything runs."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main([*BUILD, "--teacher-config", DEEP_OBJECT])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert "argument --teacher-config: the value nests 50,000 levels deep" in err
    assert list(tmp_path.iterdir()) == []


def test_calibration_manifest_is_read_within_the_limits(tmp_path):
    from edgekd.compress.calibration import load_calibration_set

    np.savez(tmp_path / "c.npz", x=np.zeros((4, 1, 8, 8), np.float32))
    (tmp_path / "c.manifest.json").write_text(DEEP_OBJECT)
    with pytest.raises(EdgekdError, match="calibration manifest .* nests 50,000 levels deep"):
        load_calibration_set(tmp_path / "c.npz", (1, 8, 8))


def test_training_settings_have_the_flags_caps_from_every_source(tmp_path):
    """Class 2: the Python API (BuildOptions.distill, a TrainConfig handed to train) meets the caps of --epochs."""
    from conftest import make_dataset

    from edgekd.api import BuildOptions, build
    from edgekd.distill.trainer import TrainConfig, train, validate_config
    from edgekd.models.students import build_model

    with pytest.raises(EdgekdError, match="epochs = 1000000000000 is outside the accepted range 1..10,000"):
        build(BuildOptions(target="x86-cpu", data="digits", distill={"epochs": 10**12}, out=tmp_path / "run",
                           progress=False, teacher_cache=None))
    assert not (tmp_path / "run").exists()
    with pytest.raises(EdgekdError, match="patience = 0"):
        validate_config(TrainConfig(patience=0))
    data = make_dataset(n_train=16, n_test=8)
    model = build_model("mlp", data.input_shape, data.num_classes)
    with pytest.raises(EdgekdError, match="epochs = 1000000000000"):
        train(model, data, TrainConfig(epochs=10**12), progress=False)


@NO_CUDA
def test_a_cuda_device_this_host_lacks_is_refused_before_the_teacher_trains(tmp_path, monkeypatch):
    """Class 3: refused in validate_config, which the build runs before the student choice and the teacher."""
    import edgekd.stages.teacher
    from edgekd.api import BuildOptions, build

    monkeypatch.setattr(edgekd.stages.teacher, "train", lambda *a, **k: pytest.fail("the teacher trained"))
    with pytest.raises(EdgekdError, match="training device 'cuda': this host has no cuda device") as info:
        build(BuildOptions(target="x86-cpu", data="digits", distill={"device": "cuda"}, out=tmp_path / "run",
                           progress=False, teacher_cache=None))
    assert "device: auto" in info.value.fix and not (tmp_path / "run").exists()


def test_a_teacher_at_zero_validation_accuracy_does_not_break_the_precision_choice(tmp_path):
    """Class 5: min_accuracy_ratio x 0 sets no floor; the precision is chosen on its drop and speed, and a drop
    over budget is still refused."""
    from conftest import make_dataset
    from test_stages import _ctx, _measured, _target

    from edgekd.errors import ContractError
    from edgekd.stages.choose import choose_shipped

    ctx = _ctx(_target(0.01, precision=["fp32", "int8"], min_accuracy_ratio=0.97), make_dataset(), tmp_path)
    rows = [_measured("model_fp32.onnx", "onnx", "fp32", 0.50, 1.0),
            _measured("model_int8.onnx", "onnx", "int8", 0.495, 0.5)]
    shipped, reasons = choose_shipped(ctx, rows, student_val=0.50, teacher_val=0.0)
    assert shipped == {"model_int8.onnx"} and "min_accuracy_ratio not judged" not in reasons["onnx"]
    rows[1] = _measured("model_int8.onnx", "onnx", "int8", 0.40, 0.5)
    assert choose_shipped(ctx, rows, 0.50, 0.0)[0] == {"model_fp32.onnx"}
    with pytest.raises(ContractError, match="nothing was shipped"):
        choose_shipped(ctx, rows[1:], 0.50, 0.0)
    assert choose_shipped(ctx, rows[:1], 0.0, 0.0)[0] == {"model_fp32.onnx"}  # both at 0: fp32, no division


def test_class_names_are_drawn_as_text_never_as_math(tmp_path):
    """Class 6: names that matplotlib would parse as math text ($x^{$) are data: the page and its three plots are
    written, and a selection plot with such a host name too."""
    from test_render_html import _images
    from test_render_html import make_report as html_report

    from edgekd.render_html import selection_plot, write_html
    from edgekd.schema import Selection

    report = html_report()
    report["data"]["classes"] = ["$x^{$", "a $ b $ c", r"$\frac{1}{0}$"]
    report["artifacts"][1]["path"] = "$model_int8^$.onnx"
    y = np.array([0, 0, 1, 1, 2, 2])
    np.savez(tmp_path / "eval.npz", x=np.zeros((6, 1), np.float32), y=y,
             teacher_logits=np.eye(3, dtype=np.float32)[[0, 0, 1, 1, 2, 0]],
             reference_logits=np.eye(3, dtype=np.float32)[[0, 1, 1, 1, 2, 2]])
    path = write_html(report, tmp_path / "report.html", tmp_path / "eval.npz")
    assert len(_images(path.read_text())) == 3
    sel = Selection.model_validate({
        "mode": "latency", "why": "test", "percentile": 95, "budget_ms": 1.0, "measured_on": "$host^{$",
        "format": "onnx", "precision": "int8", "measured": 1, "reused": 0, "time_s": 1.0,
        "predictor": {"kind": "none", "summary": "too few timings"},
        "candidates": [{"status": "chosen", "reason": "fits", "family": "mlp", "config": {}, "params": 10,
                        "macs": 1000, "name": "$mlp_{$", "latency_ms": {
                            "p50": 0.5, "p95": 0.5, "noise_pct": 1.0, "value": 0.5, "source": "measured"}}]})
    assert base64.b64decode(selection_plot(sel)).startswith(b"\x89PNG")
