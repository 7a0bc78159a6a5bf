"""The format registry: a throwaway format added with one backend file and one registry row (an int8 path and an
accuracy-aware int8 search included) flows through export -> int8 contract -> parity -> runner (in a fresh
process) -> report -> bundle, with no other file of edgekd touched; and every table that lists formats is the
rows'."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import make_dataset
from torch import nn

from edgekd import runner
from edgekd.backends import Artifact, Calibration, check_parity
from edgekd.cli import RUNTIME_DISTRIBUTIONS
from edgekd.compress.accuracy_aware import QuantContract, QuantJob
from edgekd.distill.trainer import TrainConfig, train
from edgekd.emulate import RUNTIME_PACKAGES
from edgekd.errors import ContractError, EdgekdError
from edgekd.formats import (
    EXTRA_MODULES,
    FORMATS,
    Extra,
    FormatSpec,
    artifact_suffixes,
    get_format,
    register_format,
    version_distributions,
)
from edgekd.models.teachers import predict_logits
from edgekd.stages.export import _teacher_formats
from edgekd.targets import load_target

# The whole format: exporter, int8 quantizer and int8 search (host side: edgekd and torch imported inside functions
# only, as a plugin file must) and session (runner side). int8: per-channel symmetric int8 weights, per-tensor uint8
# activations at every Linear's input from the calibration set's min/max, run as quantize -> dequantize -> matmul;
# the search keeps Linear inputs float, most sensitive first, with the generic greedy search of edgekd.compress.
PLUGIN = '''
"""npzmlp: a Linear/ReLU stack saved as an .npzmlp (npz) file and run with numpy matmuls, in fp32 or int8."""
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
            arrays = dict(np.load(fh, allow_pickle=False))
        self.layers = [_layer(arrays, i) for i in range(int(arrays["n"]))]
        self.input_shape = [-1, self.layers[0][0].shape[1]]
        self.runtime_version = np.__version__

    def run(self, x):
        h = x.reshape(len(x), -1).astype(np.float32)
        for i, (w, b, act) in enumerate(self.layers):
            if act is not None:  # quantize -> dequantize the input on its uint8 grid
                scale, zero = act
                h = (np.clip(np.round(h / scale) + zero, 0, 255) - zero) * scale
            h = h @ w.T + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0)
        return h.astype(np.float32)


def _layer(arrays, i):
    if "q%d" % i not in arrays:
        return arrays["w%d" % i], arrays["b%d" % i], None
    w = arrays["q%d" % i].astype(np.float32) * arrays["ws%d" % i][:, None]
    return w, arrays["b%d" % i], (float(arrays["as%d" % i]), float(arrays["az%d" % i]))


class NpzMlpBackend:
    name = "npzmlp"
    precisions = ("fp32", "int8")

    @classmethod
    def from_target(cls, target):
        return cls()

    def export(self, model, sample, path, precision, calibration, float_inputs=()):
        from edgekd.backends import Artifact  # lazy: a plugin file imports only numpy and the runner at load

        layers = _linears(model)
        arrays = {"n": np.asarray(len(layers))}
        ranges = _input_ranges(layers, calibration.x) if precision == "int8" else None
        for i, (w, b) in enumerate(layers):
            arrays["w%d" % i], arrays["b%d" % i] = w, b
            if ranges is not None and "fc%d" % i not in float_inputs:
                scale = np.maximum(np.abs(w).max(1), 1e-12) / 127.0
                lo, hi = min(ranges[i][0], 0.0), max(ranges[i][1], 0.0)
                arrays["as%d" % i] = np.asarray(max(hi - lo, 1e-12) / 255.0, np.float32)
                arrays["az%d" % i] = np.asarray(np.round(-lo / arrays["as%d" % i]), np.float32)
                arrays["q%d" % i] = np.clip(np.round(w / scale[:, None]), -127, 127).astype(np.int8)
                arrays["ws%d" % i] = scale.astype(np.float32)
                del arrays["w%d" % i]
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
        details = {"layers": len(layers), "float_inputs": sorted(float_inputs)}
        return Artifact(path, self.name, precision, [path], details)

    def list_operators(self, path):
        n = len(NpzMlpSession(str(path), 1).layers)
        return {"MatMul": n, "Relu": n - 1}

    def accuracy_aware_int8(self, job):
        from edgekd.compress import accuracy_aware as aa  # lazy: as above

        sets = aa.check_sets([job.val])
        aa.check_fraction(job.max_float_fraction)
        work = job.out.parent / (".search-" + job.out.name)
        work.mkdir()
        try:
            fp32_logits = [NpzMlpSession(str(job.fp32), 1).run(x) for x, _ in sets]
            fp32_acc = [aa.accuracy(lg, y) for lg, (_, y) in zip(fp32_logits, sets)]
            aa.check_fp32_floor(job.contract, fp32_acc)

            def score(float_inputs):
                path = work / ("q%d.npzmlp" % len(list(work.iterdir())))
                self.export(job.model, job.sample, path, "int8", job.calibration, float_inputs)
                accs, err = aa.score_logits(NpzMlpSession(str(path), 1), sets, fp32_logits)
                return aa.Scored(accs, err, path)

            plain = score([])
            units = ["fc%d" % i for i in range(len(_linears(job.model)))]
            ranked = sorted((aa.Candidate(u, (u,)) for u in units), key=lambda c: -np.mean(score([c.label]).accuracy))
            cap = int(np.floor(job.max_float_fraction * len(units)))
            search = aa.greedy_float_search(score, ranked, len, cap, job.contract, fp32_acc, plain,
                                            job.log or (lambda m: None), "npzmlp int8")
            if not search.met:
                raise aa.contract_unmet("npzmlp int8", job.contract, search.attempts, cap, len(units), "inputs",
                                        "input(s)", fp32_acc)
            latency, cost = aa.latency_cost(job.timing_x, job.threads, (job.fp32, "fp32"), plain.path,
                                            search.final.path if search.members else None)
            aa.place(search.final.path, job.out)
        finally:
            for f in work.iterdir():
                f.unlink()
            work.rmdir()
        return aa.AccuracyAwareResult(job.out, self.name, "per-input float fallback", job.contract, fp32_acc,
                                      plain.accuracy, search.final.accuracy, search.drops, search.members,
                                      len(units) - len(search.members), len(units), search.attempts, [], latency,
                                      cost, "npzmlp int8 meets the contract")


def _linears(model):
    from torch import nn  # lazy: as above

    return [(m.weight.detach().numpy().astype(np.float32), m.bias.detach().numpy().astype(np.float32))
            for m in model.modules() if isinstance(m, nn.Linear)]


def _input_ranges(layers, x):
    """(min, max) of each Linear's input over the calibration set, in float."""
    h, ranges = x.reshape(len(x), -1).astype(np.float32), []
    for i, (w, b) in enumerate(layers):
        ranges.append((float(h.min()), float(h.max())))
        h = h @ w.T + b
        h = np.maximum(h, 0) if i < len(layers) - 1 else h
    return ranges
'''


@pytest.fixture
def npzmlp(tmp_path):
    """Register the throwaway format for one test, and take it back out afterwards."""
    plugin = tmp_path / "npzmlp_format.py"
    plugin.write_text(PLUGIN)
    register_format(FormatSpec("npzmlp", str(plugin), "NpzMlpBackend", "NpzMlpSession",
                               distributions=(("numpy", "npzmlp runtime"),), runtime_distributions=("numpy",),
                               colour="#8c564b", onnx_teacher="converts"))
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


# ------------------------------------------------------------------------------------------------ the rows
def test_registry_rows_describe_the_builtin_formats():
    assert {"onnx", "openvino", "tflite"} <= set(FORMATS)
    assert get_format("onnx").suffix == ".onnx" and get_format("tflite").runtime == "ai_edge_litert"
    assert get_format("openvino").plugin_file is None  # built into runner.py: nothing to ship beside it


def test_each_row_names_the_session_the_runner_runs_it_with():
    """runner.py cannot import edgekd: its session table and the rows are checked against each other."""
    builtin = {name for name, cls in runner.SESSIONS.items() if getattr(runner, cls.__name__, None) is cls}
    assert builtin == {name for name, spec in FORMATS.items() if spec.builtin_session}
    for name, spec in FORMATS.items():
        assert spec.session_class() is runner.SESSIONS[name] and spec.session_class().format == name
    wrong = FormatSpec("onnx", "edgekd.backends.onnx", "OnnxBackend", "TfliteSession")
    with pytest.raises(EdgekdError, match="names session class 'TfliteSession'"):
        wrong.session_class()


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_an_installed_runtime_has_a_version_in_the_latency_cache_key(fmt):
    """A row without its runtime's distribution made the key read 'unknown', never invalidated by an upgrade."""
    spec = get_format(fmt)
    assert spec.runtime_version() != f"{spec.runtime} unknown"
    assert spec.device_requirement == spec.runtime_distributions[0]


def test_the_side_tables_are_derived_from_the_rows(npzmlp):
    assert RUNTIME_DISTRIBUTIONS == tuple(version_distributions())[: len(RUNTIME_DISTRIBUTIONS)]
    assert ("numpy", "npzmlp runtime") in version_distributions()  # a plugin's tools join `edgekd --version`
    assert artifact_suffixes().endswith("/.npzmlp")
    assert RUNTIME_PACKAGES == {n: FORMATS[n].device_requirement for n in ("onnx", "openvino", "tflite")}
    assert set(EXTRA_MODULES) >= {spec.extra.name for spec in FORMATS.values() if spec.extra is not None}
    assert EXTRA_MODULES["openvino"] == get_format("openvino").extra.modules
    assert isinstance(get_format("tflite").extra, Extra) and get_format("npzmlp").extra is None


def test_which_formats_an_onnx_teacher_is_measured_in_comes_from_the_rows(npzmlp):
    """An ONNX teacher is measured as the ONNX it is, then in each student format whose exporter reads it."""
    foreign = SimpleNamespace(primary=SimpleNamespace(model=SimpleNamespace(logits_only=True)))
    native = SimpleNamespace(primary=SimpleNamespace(model=SimpleNamespace(logits_only=False)))

    def ctx(*formats):
        return SimpleNamespace(target=SimpleNamespace(runtime=SimpleNamespace(formats=list(formats))))

    assert _teacher_formats(ctx("tflite", "openvino"), foreign) == ["onnx", "openvino"]
    assert _teacher_formats(ctx("npzmlp"), foreign) == ["onnx", "npzmlp"]  # its row says "converts"
    assert _teacher_formats(ctx("tflite", "npzmlp"), native) == ["tflite", "npzmlp"]


# ------------------------------------------------------------------------------------------------ int8 contract
class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture(scope="module")
def hostile_mlp():
    """An MLP whose plain int8 collapses: input feature 0 is rescaled x1000 (the first Linear's weights for it
    /1000, so the model computes the same), so the per-tensor range of the first Linear's input is dominated by it
    and every other feature rounds to zero. Keeping that one input float restores the accuracy in every format."""
    data = make_dataset(n_train=480, n_test=64, shape=(12,), classes=4)
    torch.manual_seed(0)
    model = train(Mlp(), data, TrainConfig(epochs=8, lr=1e-2), progress=False).model.eval()
    with torch.no_grad():
        model.body[0].weight[:, 0] /= 1000

    def scaled(x: np.ndarray) -> np.ndarray:
        x = x.copy()
        x[:, 0] *= 1000
        return x

    return model, replace(data, x_train=scaled(data.x_train), x_val=scaled(data.x_val), x_test=scaled(data.x_test))


def _job(fmt: str, model: nn.Module, data, folder: Path, contract: QuantContract, max_float_fraction: float):
    """The job plan_int8 (edgekd.stages.compress) hands a backend: this format's fp32 and plain int8 artifacts."""
    backend, suffix, sample = get_format(fmt).backend_class()(), get_format(fmt).suffix, data.x_val[:1]
    calibration = Calibration(data.x_train[:64], {"test": True})
    plain = backend.export(model, sample, folder / f"plain{suffix}", "int8", calibration)
    fp32 = backend.export(model, sample, folder / f"fp32{suffix}", "fp32", None)
    return backend, QuantJob(model, sample, fp32.path, plain, folder / f"int8{suffix}", calibration,
                             (data.x_val, data.y_val), contract, max_float_fraction, 1, data.x_val[:16])


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "npzmlp"])
def test_every_format_meets_the_same_int8_accuracy_contract(fmt, hostile_mlp, npzmlp, tmp_path):
    """Plain int8 breaks a tight contract; the format's search keeps the sensitive layer float and ships an int8
    artifact within it, which keeps parity with the PyTorch model in the real runtime."""
    if fmt == "tflite":
        pytest.importorskip("litert_torch")
    model, data = hostile_mlp
    backend, job = _job(fmt, model, data, tmp_path, QuantContract(0.002), max_float_fraction=0.7)
    result = backend.accuracy_aware_int8(job)
    assert result.plain_int8_accuracy[0] < result.fp32_accuracy[0] - 0.002  # plain int8 broke the contract
    assert result.drop[0] <= 0.002 and result.float_layers and result.quantized_layers >= 1
    assert set(result.latency_ms) == {"fp32", "plain_int8", "shipped"} and result.attempts[-1].met
    shipped = Artifact(job.out, fmt, "int8", [job.out])
    logits = runner.load_session(str(job.out), 1, "int8").run_batched(data.x_val)
    assert float((logits.argmax(1) == data.y_val).mean()) == pytest.approx(result.accuracy[0])
    assert check_parity(shipped, predict_logits(model, data.x_val), data.x_val).passed


@pytest.mark.parametrize("fmt", ["onnx", "npzmlp"])
def test_every_format_ships_nothing_when_no_float_layer_is_allowed(fmt, hostile_mlp, npzmlp, tmp_path):
    model, data = hostile_mlp
    backend, job = _job(fmt, model, data, tmp_path, QuantContract(0.002), max_float_fraction=0.0)
    with pytest.raises(ContractError, match="best attempt .* reached accuracy"):
        backend.accuracy_aware_int8(job)
    assert not job.out.exists()


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_a_new_format_flows_through_build_runner_report_and_bundle(npzmlp, tmp_path):
    from edgekd.api import BuildOptions, build
    from edgekd.bundle import make_bundle

    target = yaml.safe_load(Path(load_target("x86-cpu").path).read_text())
    target.update(name="npz-board")
    target["runtime"] = {"format": "npzmlp", "precision": "int8", "threads": 1}
    target["student_budget"]["family"] = "mlp"
    (tmp_path / "npz-board.yaml").write_text(yaml.safe_dump(target))
    out = tmp_path / "run"
    result = build(BuildOptions(target=str(tmp_path / "npz-board.yaml"), data=str(_tabular(tmp_path)), out=out,
                                epochs=3, teacher_epochs=3, runs=20, warmup=2, progress=False,
                                teacher_cache=None, log=lambda m: None))
    rows = result.report["artifacts"]
    assert [(r["format"], r["precision"]) for r in rows] == [("npzmlp", "fp32"), ("npzmlp", "int8")]
    assert all(r["runtime"] == "numpy-matmul" and r["accuracy"] > 0.8 for r in rows)  # measured by the runner
    assert rows[0]["operators"] == {"MatMul": 3, "Relu": 2} and all(r["parity"]["passed"] for r in rows)
    assert rows[0]["accuracy"] - rows[1]["accuracy"] <= 0.02 + 0.02  # the target's int8 contract (val) + test noise
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["session_plugins"][0]["path"] == npzmlp.name and (out / npzmlp.name).is_file()
    assert "npzmlp" in (out / "report.md").read_text()

    bundle = make_bundle(out)
    assert npzmlp.name in bundle.files and "--session-plugin" in bundle.command
    proc = subprocess.run([sys.executable, *bundle.runner_args(python="")[1:], "--runs", "5", "--warmup", "1",
                           "--no-memory"], cwd=bundle.directory, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((bundle.directory / "result.json").read_text())["runtime"]["name"] == "numpy-matmul"


# ------------------------------------------------------------------------------------------------ plugin safety
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
