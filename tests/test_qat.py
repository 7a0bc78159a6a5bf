"""QAT with KD: BN folding is exact, fake quant wraps every layer, and the result is an onnxruntime Q/DQ model."""

from __future__ import annotations

import pytest
import torch
from conftest import make_dataset

from edgekd.backends import Calibration
from edgekd.backends.onnx import qat_kd_onnx_int8
from edgekd.compress.qat import FakeQuantLayer, QatConfig, fold_batchnorm, prepare_qat, strip_qat
from edgekd.distill.trainer import TrainConfig, train
from edgekd.errors import EdgekdError
from edgekd.models.students import build_model


@pytest.fixture(scope="module")
def setup():
    data = make_dataset(n_train=256, n_test=64, shape=(1, 8, 8), classes=3)
    torch.manual_seed(0)
    model = build_model("mobilenetv2", data.input_shape, 3, width=0.5)
    model = train(model, data, TrainConfig(epochs=3, lr=1e-2), progress=False).model
    return data, model


def test_fold_batchnorm_is_exact(setup):
    data, model = setup
    import copy

    folded = fold_batchnorm(copy.deepcopy(model))
    x = torch.from_numpy(data.x_val)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), folded(x), atol=1e-4)


def test_prepare_and_strip(setup):
    data, model = setup
    qat = prepare_qat(model, data.x_train[:32])
    wrapped = [m for m in qat.modules() if isinstance(m, FakeQuantLayer)]
    n_layers = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())
    assert len(wrapped) == n_layers
    with torch.no_grad():
        x = torch.from_numpy(data.x_val)
        assert (qat.eval()(x).argmax(1) == model.eval()(x).argmax(1)).float().mean() > 0.8
    plain = strip_qat(qat)
    assert not any(isinstance(m, FakeQuantLayer) for m in plain.modules())
    with pytest.raises(EdgekdError):
        prepare_qat(model, data.x_train[:8], scheme="int4")


def test_prepare_qat_follows_the_schemes_table(setup):
    """Signed activations for s8*, a +-64 weight grid for the 7-bit schemes onnxruntime deploys them with."""
    data, model = setup
    for scheme, signed, limit in (("u8s8", False, 127), ("s8s8", True, 127), ("u8s7", False, 64), ("s8s7", True, 64)):
        layer = next(m for m in prepare_qat(model, data.x_train[:16], scheme).modules()
                     if isinstance(m, FakeQuantLayer))
        assert (layer.act.quant_min < 0) is signed
        assert (layer.weight.quant_min, layer.weight.quant_max) == (-limit, limit)


@pytest.mark.slow
def test_qat_kd_exports_a_runnable_qdq_model(setup, tmp_path):
    import onnx

    from edgekd.runner import load_session

    data, model = setup
    r = qat_kd_onnx_int8(model, model, data, Calibration(data.x_train[:64], {}), tmp_path / "qat.onnx",
                         QatConfig(epochs=1))
    ops = {n.op_type for n in onnx.load(str(r.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops
    logits = load_session(str(r.path), 1, "int8").run_batched(data.x_test)
    assert logits.shape == (len(data.y_test), 3)
    assert r.val_accuracy_int8_ptq is not None
    assert r.val_accuracy_int8_qat >= r.val_accuracy_fp32_before - 0.15
