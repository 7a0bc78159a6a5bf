"""edgekd explain-int8: a planted outlier channel, quantized per tensor, puts its layer first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import artifact_row, make_report
from torch import nn

from edgekd.cli import main
from edgekd.compress.int8_divergence import explain, median_channel_sqnr
from edgekd.io import sha256_file, write_json

OUTLIER_LAYER = "2"  # the second convolution of the Sequential below


def small_cnn(outlier: float) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    with torch.no_grad():
        model[2].weight[3] *= outlier  # one output channel far larger than the rest ...
        model[4].weight[:, 3] = 0.0  # ... that the next layer ignores: the answer rests on the channels it crushes
    return model


def quantized_pair(folder: Path, outlier: float, per_channel: bool) -> tuple[Path, Path, np.ndarray]:
    """fp32 ONNX of the small CNN and its QDQ int8 (onnxruntime quantize_static), calibrated on 32 samples."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    x = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    fp32, int8 = folder / "model_fp32.onnx", folder / "model_int8.onnx"
    torch.onnx.export(small_cnn(outlier), (torch.from_numpy(x[:1]),), str(fp32), dynamo=False,
                      input_names=["input"], output_names=["logits"])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": x[i:i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return fp32, int8, x


def module_of(layer: str) -> str:
    return layer.split("/")[1] if layer.startswith("/") else layer


def test_a_planted_outlier_channel_ranks_its_layer_first(tmp_path):
    fp32, int8, x = quantized_pair(tmp_path, outlier=200.0, per_channel=False)
    result = explain("onnx", fp32, int8, x)
    first = result.ranked[0]
    assert module_of(first.node) == OUTLIER_LAYER and first.op_type == "Conv"
    assert first.weight_sqnr_db < 10.0 < min(layer.weight_sqnr_db for layer in result.ranked[1:])
    assert module_of(result.first_below or "/x/") == OUTLIER_LAYER


def test_without_the_outlier_no_layer_falls_below_the_threshold(tmp_path):
    fp32, int8, x = quantized_pair(tmp_path, outlier=1.0, per_channel=True)
    result = explain("onnx", fp32, int8, x)
    assert result.first_below is None
    assert min(layer.weight_sqnr_db for layer in result.ranked) > 30.0


def test_median_channel_sqnr_sees_the_channels_an_outlier_crushed():
    weights = np.ones((8, 9))
    weights[3] *= 200.0
    step = np.abs(weights).max() / 127  # a per-tensor grid stretched by the outlier
    crushed = np.round(weights / step) * step
    whole = 20 * np.log10(np.linalg.norm(weights) / np.linalg.norm(weights - crushed))
    assert whole > 20.0 > median_channel_sqnr(weights, crushed)


def make_explainable_run(root: Path) -> Path:
    """A run directory holding an fp32 + per-tensor int8 ONNX pair with the outlier, its calibration set, a
    manifest and a report (no training)."""
    run = root / "run"
    run.mkdir()
    fp32, int8, x = quantized_pair(run, outlier=200.0, per_channel=False)
    np.savez(run / "calibration.npz", x=x, y=np.zeros(len(x), dtype=np.int64))
    np.savez(run / "eval.npz", x=x, y=np.zeros(len(x), dtype=np.int64))
    entries = [{"path": p.name, "role": "student", "format": "onnx", "precision": precision, "runtime": "onnxruntime",
                "sha256": sha256_file(p), "size_bytes": p.stat().st_size,
                "files": [{"path": p.name, "sha256": sha256_file(p), "size_bytes": p.stat().st_size}]}
               for p, precision in ((fp32, "fp32"), (int8, "int8"))]
    manifest = {"edgekd_version": "0.1.0", "target": "x86-cpu", "output": {}, "normalization": {}, "classes": [],
                "input": {"shape": [1, 1, 8, 8], "dtype": "float32", "layout": "NCHW"},
                "calibration": {"file": "calibration.npz", "sha256": sha256_file(run / "calibration.npz")},
                "eval_inputs": {"path": "eval.npz", "sha256": sha256_file(run / "eval.npz")}, "artifacts": entries}
    write_json(run / "manifest.json", manifest)
    rows = [artifact_row(e["path"], "onnx", e["precision"], sha256=e["sha256"]) for e in entries]
    write_json(run / "report.json", make_report(artifacts=rows, eval_inputs={**manifest["eval_inputs"], "samples": 32}))
    return run


@pytest.fixture(scope="module")
def explainable_run(tmp_path_factory) -> Path:
    return make_explainable_run(tmp_path_factory.mktemp("explain"))


def test_cli_ranks_the_outlier_layer_first_and_writes_json(explainable_run, tmp_path, capsys):
    out = tmp_path / "explain.json"
    assert main(["explain-int8", str(explainable_run), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "ranked by the noise each layer adds itself" in table
    first_row = next(line for line in table.splitlines() if line.strip().startswith("1 "))
    assert f"/{OUTLIER_LAYER}/Conv" in first_row
    written = json.loads(out.read_text())
    assert written["layers"][0]["rank"] == 1 and module_of(written["layers"][0]["node"]) == OUTLIER_LAYER
    assert module_of(written["first_below_threshold"]) == OUTLIER_LAYER


def test_cli_refuses_a_changed_artifact_before_running_it(explainable_run, tmp_path, capsys):
    run = tmp_path / "changed"
    shutil.copytree(explainable_run, run)
    (run / "model_int8.onnx").write_bytes((run / "model_int8.onnx").read_bytes() + b"\0")
    assert main(["explain-int8", str(run)]) == 2
    assert "differs from the sha256 in manifest.json" in capsys.readouterr().err


def test_cli_names_a_run_without_an_explainable_pair(explainable_run, tmp_path, capsys):
    assert main(["explain-int8", str(explainable_run), "--threshold-db", "nan"]) == 2
    assert "--threshold-db" in capsys.readouterr().err
    assert main(["explain-int8", str(tmp_path / "nowhere")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_a_broken_int8_contract_names_the_layer_where_int8_diverged(tmp_path):
    from edgekd.backends import Calibration
    from edgekd.backends.onnx import onnx_accuracy_aware_int8
    from edgekd.compress.accuracy_aware import QuantContract
    from edgekd.errors import ContractError
    from edgekd.runner import load_session

    fp32, _, x = quantized_pair(tmp_path, outlier=200.0, per_channel=False)
    y = load_session(str(fp32), 1, "fp32").run_batched(x).argmax(1)
    with pytest.raises(ContractError, match=r"plain int8 diverged most at /2/Conv") as info:
        onnx_accuracy_aware_int8(fp32, tmp_path / "out.onnx", Calibration(x, {}), [(x, y)], QuantContract(0.0),
                                 max_float_fraction=0.0)
    assert "edgekd explain-int8" in info.value.fix and not (tmp_path / "out.onnx").exists()
