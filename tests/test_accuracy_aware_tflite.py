"""TFLite accuracy-aware int8: the hostile model's plain int8 collapses; keeping its convs float meets the contract."""

from __future__ import annotations

import pytest
from test_accuracy_aware import make_hostile

from edgekd.backends import Calibration
from edgekd.backends.tflite import tflite_accuracy_aware_int8
from edgekd.compress.accuracy_aware import QuantContract
from edgekd.errors import ContractError

pytest.importorskip("ai_edge_quantizer")
pytest.importorskip("litert_torch")


@pytest.fixture(scope="module")
def hostile():
    model, data = make_hostile()
    return model, data, Calibration(data.x_train[:64], {"test": True})


def test_tight_contract_is_met_listing_float_layers(hostile, tmp_path):
    model, data, calib = hostile
    out = tmp_path / "int8.tflite"
    r = tflite_accuracy_aware_int8(model, data.x_val[:1], out, calib, [(data.x_val, data.y_val)],
                                   QuantContract(0.002), max_float_fraction=0.7, timing_x=data.x_val[:16])
    assert r.plain_int8_accuracy[0] < r.fp32_accuracy[0] - 0.002  # plain int8 breaks the contract
    assert r.drop[0] <= 0.002 and out.exists() and r.format == "tflite"
    assert r.float_layers and len(r.float_layers) <= 2 and r.candidate_layers == 3
    assert any("Conv2d_c1" in n for n in r.float_layers)  # the layer producing the x1000 channel
    assert r.quantized_layers == 3 - len(r.float_layers) >= 1  # still an int8 model
    assert len(r.sensitivity) == 3 and len(r.float_layers) == 2 and r.attempts[-1].met and not r.attempts[0].met
    assert set(r.latency_ms) == {"fp32", "plain_int8", "shipped"} and r.latency_cost is not None
    from edgekd.backends.tflite import describe

    info = describe(out, data.x_val[:1], "int8")
    assert "QUANTIZE" in info["ops"] and "DEQUANTIZE" in info["ops"] and info["input_dtype"] == "float32"
    assert [p.name for p in tmp_path.iterdir()] == ["int8.tflite"]  # no staging file left behind


def test_no_float_layer_allowed_raises_and_writes_nothing(hostile, tmp_path):
    model, data, calib = hostile
    out = tmp_path / "int8.tflite"
    with pytest.raises(ContractError, match="best attempt .* reached accuracy"):
        tflite_accuracy_aware_int8(model, data.x_val[:1], out, calib, [(data.x_val, data.y_val)],
                                   QuantContract(0.002), max_float_fraction=0.0)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_plain_int8_is_kept_when_it_meets_the_contract(hostile, tmp_path):
    model, data, calib = hostile
    r = tflite_accuracy_aware_int8(model, data.x_val[:1], tmp_path / "q.tflite", calib,
                                   [(data.x_val, data.y_val)], QuantContract(1.0), integer_io=True)
    assert r.float_layers == [] and r.sensitivity == [] and r.latency_ms == {} and r.quantized_layers == 3
