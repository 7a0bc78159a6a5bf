"""Accuracy-aware int8: a tight contract is met by keeping the sensitive layers float; impossible ones error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_dataset
from torch import nn

from edgekd.backends import Calibration
from edgekd.backends.onnx import export_onnx_fp32, onnx_accuracy_aware_int8
from edgekd.compress.accuracy_aware import QuantContract
from edgekd.distill.trainer import TrainConfig, train
from edgekd.errors import ContractError, EdgekdError


class TwoConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        return self.fc(x.mean((2, 3)))


def make_hostile():
    """A model whose plain int8 collapses: one channel of conv1's output is rescaled x1000 (and conv2's weights
    for it /1000, which ReLU lets through unchanged), so a per-tensor activation range is dominated by it."""
    data = make_dataset(n_train=320, n_test=128, shape=(1, 8, 8), classes=4)
    torch.manual_seed(0)
    model = train(TwoConv(), data, TrainConfig(epochs=5, lr=1e-2), progress=False).model
    with torch.no_grad():
        model.c1.weight[0] *= 1000
        model.c1.bias[0] *= 1000
        model.c2.weight[:, 0] /= 1000
    return model.eval(), data


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    model, data = make_hostile()
    path = export_onnx_fp32(model, data.x_val[:1], tmp_path_factory.mktemp("aa") / "fp32.onnx")
    return data, path, Calibration(data.x_train[:64], {"test": True})


def test_tight_contract_is_met_listing_float_layers(hostile, tmp_path):
    data, fp32, calib = hostile
    out = tmp_path / "int8.onnx"
    r = onnx_accuracy_aware_int8(fp32, out, calib, [(data.x_val, data.y_val)], QuantContract(0.002),
                                 max_float_fraction=0.7, timing_x=data.x_val[:16])
    assert r.plain_int8_accuracy[0] < r.fp32_accuracy[0] - 0.002  # plain int8 breaks the contract
    assert r.drop[0] <= 0.002 and out.exists()
    assert r.float_tensors == ["relu"] and "node_conv2d_1" in r.float_layers
    assert r.quantized_layers >= 1  # still an int8 model: the classifier stays quantized
    assert set(r.latency_ms) == {"fp32", "plain_int8", "shipped"} and r.latency_cost is not None
    assert r.sensitivity[0]["tensor"] == "relu" and len(r.attempts) == 2
    import onnx

    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)


def test_float_layer_cap_makes_the_contract_unmeetable(hostile, tmp_path):
    data, fp32, calib = hostile
    out = tmp_path / "int8.onnx"
    with pytest.raises(ContractError, match="best attempt .* reached accuracy"):
        onnx_accuracy_aware_int8(fp32, out, calib, [(data.x_val, data.y_val)], QuantContract(0.002),
                                 max_float_fraction=0.4)
    assert not out.exists()


def test_accuracy_floor_above_fp32_ships_nothing(hostile, tmp_path):
    data, fp32, calib = hostile
    out = tmp_path / "int8.onnx"
    with pytest.raises(ContractError, match="even the fp32 model reaches only"):
        onnx_accuracy_aware_int8(fp32, out, calib, [(data.x_val, data.y_val)], QuantContract(0.01, min_accuracy=1.01))
    assert not out.exists()


def test_plain_int8_is_kept_when_it_meets_the_contract(hostile, tmp_path):
    data, fp32, calib = hostile
    r = onnx_accuracy_aware_int8(fp32, tmp_path / "q.onnx", calib, [(data.x_val, data.y_val)], QuantContract(1.0))
    assert r.float_layers == [] and r.sensitivity == [] and r.latency_ms == {}


def test_bad_contract_and_empty_split():
    with pytest.raises(EdgekdError):
        QuantContract(-0.1)
    with pytest.raises(EdgekdError, match="non-empty"):
        onnx_accuracy_aware_int8(Path("x.onnx"), Path("y.onnx"), Calibration(np.zeros((1, 1, 8, 8), np.float32), {}),
                                 [(np.zeros((0, 1, 8, 8), np.float32), np.zeros(0))], QuantContract(0.01))


@pytest.mark.slow
def test_openvino_accuracy_control_meets_tight_contract(hostile, tmp_path):
    pytest.importorskip("nncf")
    from edgekd.backends.openvino import openvino_accuracy_aware_int8

    data, fp32, calib = hostile
    r = openvino_accuracy_aware_int8(fp32, tmp_path / "m.xml", calib, (data.x_val, data.y_val), QuantContract(0.01),
                                     timing_x=data.x_val[:16])
    assert r.drop[0] <= 0.01 and (tmp_path / "m.xml").exists()
    assert r.quantized_layers + len(r.float_layers) <= r.candidate_layers
