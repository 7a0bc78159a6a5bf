"""The format registry: a throwaway format added with one backend file and one registry row flows through
export -> parity -> runner (in a fresh process) -> report -> bundle, with no other file of edgekd touched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgekd import runner
from edgekd.formats import FORMATS, FormatSpec, get_format, register_format
from edgekd.targets import load_target

# The whole format: exporter (host side, torch imported inside functions only) and session (runner side).
PLUGIN = '''
"""npzmlp: a Linear/ReLU stack saved as an .npzmlp (npz) file and run with numpy matmuls."""
import numpy as np
from edgekd_runner import RunnerError, Session, register_session


@register_session
class NpzMlpSession(Session):
    format = "npzmlp"
    suffixes = (".npzmlp",)
    runtime = "numpy-matmul"
    install_hint = "pip install numpy"

    def __init__(self, path, threads, precision=None):
        with open(path, "rb") as fh:
            arrays = np.load(fh, allow_pickle=False)
            self.layers = [(arrays["w%d" % i], arrays["b%d" % i]) for i in range(len(arrays.files) // 2)]
        self.input_shape = [-1, self.layers[0][0].shape[1]]
        self.runtime_version = np.__version__

    def run(self, x):
        h = x.reshape(len(x), -1).astype(np.float32)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0)
        return h


class NpzMlpBackend:
    name = "npzmlp"
    precisions = ("fp32",)

    @classmethod
    def from_target(cls, target):
        return cls()

    def export(self, model, sample, path, precision, calibration):
        from torch import nn
        from edgekd.backends import Artifact

        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        arrays = {}
        for i, m in enumerate(linears):
            arrays["w%d" % i] = m.weight.detach().numpy()
            arrays["b%d" % i] = m.bias.detach().numpy()
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        return Artifact(path, self.name, precision, [path], {"layers": len(linears)})

    def list_operators(self, path):
        n = len(NpzMlpSession(str(path), 1).layers)
        return {"MatMul": n, "Relu": n - 1}

    def accuracy_aware_int8(self, job):
        from edgekd.errors import ContractError

        raise ContractError("npzmlp has no int8", "use fp32")
'''


@pytest.fixture
def npzmlp(tmp_path):
    """Register the throwaway format for one test, and take it back out afterwards."""
    plugin = tmp_path / "npzmlp_format.py"
    plugin.write_text(PLUGIN)
    register_format(FormatSpec("npzmlp", str(plugin), "NpzMlpBackend", extra="", device_requirement="numpy",
                               colour="#8c564b"))
    yield plugin
    FORMATS.pop("npzmlp", None)
    runner.SESSIONS.pop("npzmlp", None)
    runner.PLUGIN_OF_FORMAT.pop("npzmlp", None)


def _tabular(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 2, (3, 12))

    def split(n: int):
        y = rng.integers(0, 3, n)
        return (centers[y] + rng.normal(0, 1, (n, 12))).astype(np.float32), y

    (x_train, y_train), (x_test, y_test) = split(600), split(200)
    path = tmp_path / "table.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def test_registry_rows_describe_the_builtin_formats():
    assert {"onnx", "openvino", "tflite"} <= set(FORMATS)
    assert get_format("onnx").suffix == ".onnx" and get_format("tflite").runtime == "ai_edge_litert"
    assert get_format("openvino").plugin_file is None  # built into runner.py: nothing to ship beside it


@pytest.mark.slow
def test_a_new_format_flows_through_build_runner_report_and_bundle(npzmlp, tmp_path):
    from edgekd.api import BuildOptions, build
    from edgekd.bundle import make_bundle

    target = yaml.safe_load(Path(load_target("x86-cpu").path).read_text())
    target.update(name="npz-board")
    target["runtime"] = {"format": "npzmlp", "precision": "fp32", "threads": 1}
    target["student_budget"]["family"] = "mlp"
    (tmp_path / "npz-board.yaml").write_text(yaml.safe_dump(target))
    out = tmp_path / "run"
    result = build(BuildOptions(target=str(tmp_path / "npz-board.yaml"), data=str(_tabular(tmp_path)), out=out,
                                epochs=3, teacher_epochs=3, runs=20, warmup=2, progress=False,
                                teacher_cache=None, log=lambda m: None))
    rows = result.report["artifacts"]
    assert [(r["format"], r["precision"], r["shipped"]) for r in rows] == [("npzmlp", "fp32", True)]
    assert rows[0]["runtime"] == "numpy-matmul" and rows[0]["accuracy"] > 0.8  # measured by the runner
    assert rows[0]["operators"] == {"MatMul": 3, "Relu": 2} and rows[0]["parity"]["passed"]  # 2 hidden + head
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["session_plugins"][0]["path"] == npzmlp.name and (out / npzmlp.name).is_file()
    assert "npzmlp" in (out / "report.md").read_text()

    bundle = make_bundle(out)
    assert npzmlp.name in bundle.files and "--session-plugin" in bundle.command
    proc = subprocess.run([sys.executable, *bundle.runner_args(python="")[1:], "--runs", "5", "--warmup", "1",
                           "--no-memory"], cwd=bundle.directory, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((bundle.directory / "result.json").read_text())["runtime"]["name"] == "numpy-matmul"


def test_a_child_process_gets_only_the_plugin_of_its_own_format(npzmlp):
    """An earlier build's plugin must not ride along to a later memory probe of an ONNX model (the child would
    refuse it as unlisted in that run's manifest, or worse, import it)."""
    runner.import_plugin(str(npzmlp))
    assert runner.plugin_args("npzmlp") == ["--session-plugin", str(npzmlp.resolve())]
    assert runner.plugin_args("onnx") == []
    runner.SESSIONS.pop("npzmlp")
    assert runner.plugin_args("npzmlp") == []


def test_an_unlisted_or_tampered_plugin_is_never_imported(npzmlp, tmp_path):
    (tmp_path / "m.npzmlp").write_bytes(b"")
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": [], "session_plugins": []}))
    with pytest.raises(runner.RunnerError, match="not listed in the manifest"):
        runner.load_plugin(str(npzmlp), str(tmp_path / "m.npzmlp"))
    listed = {"artifacts": [], "session_plugins": [{"format": "npzmlp", "path": npzmlp.name, "sha256": "0" * 64}]}
    (tmp_path / "manifest.json").write_text(json.dumps(listed))
    with pytest.raises(runner.RunnerError, match="sha256 mismatch"):
        runner.load_plugin(str(npzmlp), str(tmp_path / "m.npzmlp"))
