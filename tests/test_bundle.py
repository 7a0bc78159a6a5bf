"""Device bundles: the shipped artifacts, a manifest restricted to them, runner.py, eval inputs, one command.

``make_run_dir`` builds a small but real run directory (real ONNX / OpenVINO exports of a tiny student, a real
manifest and eval.npz) without training; test_bench.py reuses it for the SSH test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from factories import artifact_row, make_report

from edgekd.cli import main
from edgekd.io import sha256_file, write_json

RUN_FIXTURE = "edgekd-run-fixture"


def make_run_dir(root: Path, formats: tuple[str, ...] = ("onnx", "openvino")) -> Path:
    """A run directory as `edgekd build` writes it (fp32 exports of an untrained tiny student), cached per session."""
    run = root / RUN_FIXTURE
    if (run / "report.json").is_file():
        return run
    import openvino as ov
    import torch

    from edgekd.backends import Artifact
    from edgekd.bench import write_eval_inputs
    from edgekd.models.students import build_model
    from edgekd.models.teachers import predict_logits
    from edgekd.stages.export import Built
    from edgekd.stages.manifest import manifest_entry

    stage = root / f".{RUN_FIXTURE}.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    torch.manual_seed(0)
    model = build_model("mobilenetv2", (1, 8, 8), 4, width=0.5, depth=1, expand=2).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 1, 8, 8)).astype(np.float32)
    logits = predict_logits(model, x)
    y = logits.argmax(1).copy()
    y[:6] = (y[:6] + 1) % 4  # not perfect, so accuracy means something
    teacher_logits = logits.copy()
    teacher_logits[-4:] = np.roll(logits[-4:], 1, axis=1)  # the teacher disagrees on 4 of 40
    write_eval_inputs(stage / "eval.npz", x, y, teacher_logits, logits)
    # The TorchScript exporter and an IR converted from its ONNX: seconds, where three dynamo exports take a minute.
    onnx_path = stage / "model_fp32.onnx"
    torch.onnx.export(model, (torch.from_numpy(x[:1]),), str(onnx_path), dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    artifacts = [Artifact(onnx_path, "onnx", "fp32", [onnx_path])]
    if "openvino" in formats:
        xml = stage / "model_fp32.xml"
        ov.save_model(ov.convert_model(str(onnx_path)), str(xml), compress_to_fp16=False)
        artifacts.append(Artifact(xml, "openvino", "fp32", [xml, xml.with_suffix(".bin")]))
    shutil.copyfile(onnx_path, stage / "teacher_fp32.onnx")
    teacher = Artifact(stage / "teacher_fp32.onnx", "onnx", "fp32", [stage / "teacher_fp32.onnx"])
    entries = [manifest_entry(Built(a, "student")) for a in artifacts]
    entries.append(manifest_entry(Built(teacher, "teacher-reference")))
    rows = [artifact_row(e["path"], e["format"], "fp32", size=e["size_bytes"], accuracy=0.85, median_ms=0.1,
                         sha256=e["sha256"]) for e in entries if e["role"] == "student"]
    manifest = {"edgekd_version": "0.1.0", "target": "x86-cpu", "output": {}, "normalization": {}, "classes": [],
                "calibration": {}, "input": {"shape": [1, 1, 8, 8], "dtype": "float32", "layout": "NCHW"},
                "eval_inputs": {"path": "eval.npz", "sha256": sha256_file(stage / "eval.npz")}, "artifacts": entries}
    write_json(stage / "manifest.json", manifest)
    write_json(stage / "report.json", make_report(artifacts=rows, measured_on={
        "arch": "x86_64", "threads": 1, "is_target_device": True},
        eval_inputs={**manifest["eval_inputs"], "samples": 40}))
    stage.rename(run)
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run_dir(tmp_path_factory.getbasetemp())


def test_bundle_holds_what_the_device_needs(run_dir, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["bundle", str(run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "python3 runner.py model_fp32.onnx model_fp32.xml --inputs eval.npz --threads 2" in printed
    names = {p.name for p in out.iterdir()}
    assert names == {"model_fp32.onnx", "model_fp32.xml", "model_fp32.bin", "manifest.json", "runner.py", "eval.npz",
                     "README.txt", "requirements-device.txt", "bundle.json"}  # no teacher, no report
    manifest = json.loads((out / "manifest.json").read_text())
    assert [a["path"] for a in manifest["artifacts"]] == ["model_fp32.onnx", "model_fp32.xml"]
    for entry in manifest["artifacts"]:
        for f in entry["files"]:
            assert sha256_file(out / f["path"]) == f["sha256"]
    assert set(np.load(out / "eval.npz").files) >= {"x", "y", "teacher_logits"}
    requirements = (out / "requirements-device.txt").read_text()
    assert "onnxruntime" in requirements and "openvino" in requirements and "numpy>=1.21" in requirements
    readme = (out / "README.txt").read_text()
    assert "pip install -r requirements-device.txt" in readme and "runner.py model_fp32.onnx" in readme
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        assert {m.name for m in tar.getmembers()} == {f"b/{n}" for n in names}
    assert not list(tmp_path.glob(".b*"))  # no staging left behind

    # The command in the README runs as written, from inside the bundle (fresh process, no edgekd import).
    proc = subprocess.run([sys.executable, "runner.py", "model_fp32.onnx", "--inputs", "eval.npz", "--runs", "20",
                           "--warmup", "2", "--min-time", "0", "--no-memory", "--json", "r.json"],
                          cwd=out, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "r.json").read_text())
    assert result["sha256_verified"] and result["accuracy"] == pytest.approx(34 / 40)

    # Rebundling into the same directory replaces it; --with-teacher adds the teacher in the shipped formats.
    assert main(["bundle", str(run_dir), "--out", str(out), "--with-teacher"]) == 0
    assert (out / "teacher_fp32.onnx").is_file()


def test_bundle_bad_input(run_dir, tmp_path, capsys):
    assert main(["bundle", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "mine.txt").write_text("user data")
    assert main(["bundle", str(run_dir), "--out", str(tmp_path / "keep")]) == 2
    assert "not an edgekd bundle" in capsys.readouterr().err
    assert (tmp_path / "keep" / "mine.txt").exists()

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    with open(broken / "model_fp32.bin", "r+b") as fh:  # corrupt the OpenVINO weights
        fh.seek(100)
        fh.write(b"\x00\x01\x02\x03")
    assert main(["bundle", str(broken), "--out", str(tmp_path / "out")]) == 2
    assert "does not match the sha256" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tar.gz").exists()

    report = json.loads((broken / "report.json").read_text())
    for a in report["artifacts"]:
        a["shipped"] = False
    (broken / "report.json").write_text(json.dumps(report))
    assert main(["bundle", str(broken), "--out", str(tmp_path / "out")]) == 2
    assert "no artifact is marked shipped" in capsys.readouterr().err
