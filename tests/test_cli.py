"""User story: "pick a target, get a deployable artifact", then gate it; and bad input through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from edgekd.cli import main
from edgekd.io import sha256_file
from edgekd.models.students import build_model
from edgekd.targets import load_target


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *args], capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_build_then_gate_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("build", "--target", "x86-cpu", "--out", str(out), "--teacher-epochs", "12", "--epochs", "20",
                   "--runs", "60", "--warmup", "5", "--no-progress", "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr[-3000:]  # the gate passed: exit 0 (failures: the exit-code test below)
    assert "gate PASSED" in proc.stdout
    assert "training the default 'teacher_resnet'" in proc.stderr  # says it trained a default teacher
    for name in ("manifest.json", "report.json", "report.md", "model_int8.xml", "model_int8.bin", "model_int8.onnx",
                 "calibration.npz", "eval.npz"):
        assert (out / name).exists(), name
    assert not (tmp_path / ".run.edgekd" / "staging").exists() and (out / ".edgekd-run.json").is_file()

    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        for f in entry["files"]:
            assert sha256_file(out / f["path"]) == f["sha256"]
    assert manifest["input"]["layout"] == "NCHW" and manifest["normalization"]["scale"] == 16.0
    assert manifest["classes"] == [str(i) for i in range(10)]

    report = json.loads((out / "report.json").read_text())
    teacher, student = report["teacher"], report["student"]
    assert student["macs"] <= teacher["macs"] / 5
    shipped = [a for a in report["artifacts"] if a["shipped"]]
    assert {a["format"] for a in shipped} == {"openvino", "onnx"}
    for a in shipped:
        assert a["precision"] == "int8"
        assert a["accuracy"] >= 0.95 * teacher["accuracy"]
        paired = a["latency_vs_teacher"]  # timed against the teacher interleaved, in the same runner process
        assert paired["ratio"] < 1 and a["speed_vs_teacher"] == pytest.approx(1 / paired["ratio"])
        assert paired["ratio_interval_95"][0] <= paired["ratio"] <= paired["ratio_interval_95"][1]
        assert a["torch_imported_in_runner"] is False
        assert a["parity"]["top1_agreement"] >= 0.98
    assert report["measured_on"]["is_target_device"] is True  # x86_64 host, x86-cpu target
    assert "| teacher" in (out / "report.md").read_text()

    gate = run_cli("gate", str(out / "report.json"), "--target", "x86-cpu")
    assert gate.returncode == 0, gate.stdout
    tight = yaml.safe_load(open(load_target("x86-cpu").path))
    tight["budgets"]["latency_ms_p95"] = 0.001
    tight_path = tmp_path / "tight.yaml"
    tight_path.write_text(yaml.safe_dump(tight))
    gate = run_cli("gate", str(out / "report.json"), "--target", str(tight_path))
    assert gate.returncode == 1
    assert "latency_ms_p95" in gate.stdout and "FAIL" in gate.stdout


def test_targets_commands(tmp_path, capsys):
    assert main(["targets", "list"]) == 0
    assert "rpi4" in capsys.readouterr().out
    assert main(["targets", "show", "rpi4"]) == 0
    shown = capsys.readouterr().out
    assert "Cortex-A72" in shown and "# install: pip install 'edgekd[tflite]'" in shown
    copy = tmp_path / "my-rpi4.yaml"  # what `show` prints is a valid profile to start a team's own from
    copy.write_text(shown)
    assert load_target(copy).model_dump(exclude={"path"}) == load_target("rpi4").model_dump(exclude={"path"})


def test_python_dash_m_edgekd_is_the_cli(capsys):
    proc = subprocess.run([sys.executable, "-m", "edgekd", "targets", "list"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert main(["targets", "list"]) == 0
    assert proc.stdout == capsys.readouterr().out


def test_version_names_the_installed_runtimes(monkeypatch, capsys):
    import importlib.metadata

    from edgekd import __version__

    real = importlib.metadata.version

    def without_openvino(dist: str) -> str:
        if dist == "openvino":
            raise importlib.metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "version", without_openvino)
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"edgekd {__version__} (Python ")
    rows = {line.split()[0]: line.split(None, 1)[1] for line in lines[1:]}
    assert {"torch", "onnxruntime", "openvino", "ai-edge-litert"} <= set(rows)
    assert rows["openvino"].startswith("not installed") and rows["torch"].startswith(torch.__version__)


def test_version_imports_no_runtime():
    code = ("import sys\nfrom edgekd.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'ai_edge_litert') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["targets", "show", "nope"], "unknown target 'nope'"),
        (["build", "--target", "nope"], "unknown target"),
        (["build", "--target", "x86-cpu", "--data", "/does/not/exist"], "data path not found"),
        (["gate", "/does/not/exist.json"], "report not found"),
    ],
)
def test_bad_input_one_message_exit_2(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "fix:" in err


def test_teacher_with_wrong_classes_writes_nothing(tmp_path, capsys):
    teacher = build_model("teacher_cnn", (1, 8, 8), 3, widths=(8, 8, 8)).eval()
    path = tmp_path / "teacher.pt2"
    torch.export.save(torch.export.export(teacher, (torch.zeros(2, 1, 8, 8),)), path)
    out = tmp_path / "run"
    assert main(["build", "--target", "x86-cpu", "--teacher", str(path), "--out", str(out), "--no-progress"]) == 2
    assert "but the data has 10 classes" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_malformed_target_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    raw = yaml.safe_load(open(load_target("x86-cpu").path))
    raw["budgets"]["model_size_kb"] = -1
    bad.write_text(yaml.safe_dump(raw))
    assert main(["build", "--target", str(bad)]) == 2
    assert "budgets.model_size_kb" in capsys.readouterr().err


def test_unreadable_report(tmp_path, capsys):
    path = tmp_path / "report.json"
    path.write_text("{not json")
    assert main(["gate", str(path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_readme_opens_with_the_two_commands():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def _small_target(tmp_path: Path, **changes: dict) -> Path:
    """x86-cpu with ONNX only (a fast build) and the given sections updated."""
    raw = yaml.safe_load(open(load_target("x86-cpu").path))
    raw["runtime"].update({"format": "onnx", "also": []})
    for section, values in changes.items():
        raw[section].update(values)
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("changes", "strict", "code", "expect"), [  # exit 0: test_build_then_gate_end_to_end
    ({"budgets": {"model_size_kb": 0.01}}, False, 1, "model_size_kb"),
    ({"device": {"arch": "aarch64"}}, True, 1, "unverified, --strict"),
])
def test_build_exit_code_follows_the_gate(tmp_path, tmp_path_factory, changes, strict, code, expect):
    """1 a budget violated (the run is still written); 1 with --strict when device budgets are unverified."""
    out = tmp_path / "run"
    cache = tmp_path_factory.getbasetemp() / "exit-code-teachers"
    proc = run_cli("build", "--target", str(_small_target(tmp_path, **changes)), "--out", str(out),
                   "--teacher-epochs", "2", "--epochs", "2", "--runs", "20", "--warmup", "2", "--no-progress",
                   "--cache-dir", str(cache), *(["--strict"] if strict else []))
    assert proc.returncode == code, proc.stderr[-3000:]
    assert expect in proc.stdout
    assert (out / "report.json").exists()
    assert json.loads((out / "report.json").read_text())["gate"]["passed"] is (code == 0)


def test_an_internal_error_is_not_bad_input(monkeypatch, capsys, tmp_path):
    """A bug exits 3 (not 1: gate failed, not 2: bad input) with one line and a log holding the traceback."""
    import edgekd.cli.targets as targets_cli

    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    monkeypatch.setattr("edgekd.stages.context.DEFAULT_CACHE", tmp_path)

    def boom(args):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(targets_cli, "cmd_targets", boom)
    assert main(["targets", "list"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: simulated bug" in err and "Traceback" not in err
    log = Path(err.split("traceback in ")[1].split(";")[0])
    assert log.is_file() and "Traceback" in log.read_text() and log.parent == tmp_path / "logs"
    assert main(["--debug", "targets", "list"]) == 3
    assert "Traceback" in capsys.readouterr().err
