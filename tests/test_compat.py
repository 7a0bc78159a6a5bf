import pytest

from edgekd.compat import check_compatibility, enforce_full_delegation, list_operators, load_delegate
from edgekd.errors import ContractError, EdgekdError
from edgekd.formats import get_backend
from edgekd.models.students import build_model


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    import numpy as np

    model = build_model("mobilenetv2", (1, 8, 8), 3, width=0.25, depth=1, expand=2).eval()
    path = tmp_path_factory.mktemp("compat") / "m.onnx"
    return get_backend("onnx").export(model, np.zeros((1, 1, 8, 8), np.float32), path, "fp32", None).path


def test_lists_name_their_sources():
    for name in ("tensorrt", "xnnpack", "nnapi"):
        spec = load_delegate(name)
        assert spec.sources and len(spec.supported) > 20
    assert load_delegate("nnapi").min_api["MEAN"] == 28


def test_student_is_fully_delegated_to_tensorrt(onnx_model):
    ops = list_operators(onnx_model)
    assert ops["Conv"] >= 3
    compat = check_compatibility(onnx_model, "tensorrt")
    assert compat.fully_delegated and compat.fallback == {}


def test_unsupported_operator_is_reported_and_enforced(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mod", ["r", "r"], ["y"],
                                                                                        fmod=1)], "g", [x], [y])
    path = tmp_path / "mod.onnx"
    onnx.save(helper.make_model(graph), path)
    compat = check_compatibility(path, "tensorrt")
    assert compat.fallback == {"Mod": 1} and not compat.fully_delegated  # Mod is "N" in TensorRT's matrix
    with pytest.raises(ContractError, match="Mod"):
        enforce_full_delegation(compat)


def test_format_mismatch_and_unknown_delegate(onnx_model):
    with pytest.raises(EdgekdError, match="takes tflite models"):
        check_compatibility(onnx_model, "nnapi")
    with pytest.raises(EdgekdError, match="no operator list"):
        load_delegate("hexagon")
