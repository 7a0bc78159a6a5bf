"""Rewrite a user's ONNX teacher into edgekd's contract, and count its cost.

The contract every artifact follows: one float32 input (normalised, as the runner feeds it) and the logits as the
first output. ``prepare_onnx`` adds a prelude (undo standardisation for raw-column models; cast for double models)
and an epilogue (``log`` of a classifier's probabilities; a network's Softmax skipped), checks the input shape
and the model's class labels against the data, and leaves the rest of the graph untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.data import Normalization
from edgekd.errors import EdgekdError

INPUT, OUTPUT = "edgekd_input", "logits"
PROB_FLOOR = 1e-7  # log(p) of a class the ensemble gives 0: finite, and far below every other logit
_FLOAT, _DOUBLE = 1, 11
_INTERNAL = ("edgekd_std", "edgekd_mean", "edgekd_scaled", "edgekd_raw", "edgekd_scores", "edgekd_floor",
             "edgekd_clipped")
_CLASSIFIERS = ("TreeEnsembleClassifier", "LinearClassifier", "SVMClassifier")


@dataclass
class PreparedOnnx:
    model: Any  # onnx.ModelProto
    static_batch: int | None
    output_kind: str  # logits | probabilities (log taken) | softmax input
    ml_ops: list[str] = field(default_factory=list)  # ai.onnx.ml operators (a non-neural teacher)


def _dims(value_info: Any) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def _input(graph: Any, input_shape: tuple[int, ...], label: str) -> tuple[Any, int | None]:
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise EdgekdError(f"ONNX teacher {label} has {len(inputs)} inputs ({[i.name for i in inputs]})",
                          "export it with one input: the batch of samples")
    inp = inputs[0]
    dtype, dims = inp.type.tensor_type.elem_type, _dims(inp)
    if dtype not in (_FLOAT, _DOUBLE):
        raise EdgekdError(f"ONNX teacher {label} takes input '{inp.name}' of element type {dtype}, not float",
                          "export it with a float32 input (skl2onnx: FloatTensorType)")
    want = ["N", *input_shape]
    if len(dims) != len(want) or any(isinstance(d, int) and d > 0 and d != w
                                    for d, w in zip(dims[1:], want[1:], strict=True)):
        shown = "(" + ", ".join(str(d) for d in dims) + ")"
        raise EdgekdError(f"ONNX teacher {label} takes input {shown}; the data's samples are (N, "
                          f"{', '.join(map(str, input_shape))})",
                          "give data of the teacher's input size (--image-size for photos; the same feature "
                          "columns for tables)")
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
    return inp, batch


def _class_labels(graph: Any) -> list[str] | None:
    for node in graph.node:
        if node.op_type in _CLASSIFIERS:
            for attr in node.attribute:
                if attr.name == "classlabels_int64s" and attr.ints:
                    return [str(v) for v in attr.ints]
                if attr.name == "classlabels_strings" and attr.strings:
                    return [s.decode() for s in attr.strings]
    return None


def _logits_source(graph: Any, ml_ops: list[str], label: str) -> tuple[str, int, str]:
    """(tensor name, element type, kind) of what becomes the logits."""
    producers = {o: n for n in graph.node for o in n.output}
    zipmap = next((n for n in graph.node if n.op_type == "ZipMap"), None)
    if zipmap is not None:  # scikit-learn's per-sample dicts: read the probability tensor they are made from
        return zipmap.input[0], _FLOAT, "probabilities (log taken)"
    floats = [o for o in graph.output if o.type.tensor_type.elem_type in (_FLOAT, _DOUBLE)]
    if len(floats) > 1:
        named = [o for o in floats if "prob" in o.name.lower() or "logit" in o.name.lower()]
        floats = named[:1] or floats
    if len(floats) != 1:
        raise EdgekdError(f"ONNX teacher {label}: cannot tell which output holds the class scores "
                          f"({[o.name for o in graph.output]})",
                          "export it with one float output: the logits (or class probabilities)")
    out = floats[0]
    dtype = out.type.tensor_type.elem_type
    producer = producers.get(out.name)
    if producer is not None and producer.op_type == "Softmax":
        return producer.input[0], dtype, "softmax input (logits)"
    if ml_ops or "prob" in out.name.lower():
        return out.name, dtype, "probabilities (log taken)"
    return out.name, dtype, "logits"


def _const(helper: Any, name: str, values: np.ndarray) -> Any:
    from onnx import numpy_helper  # lazy: optional heavy dependency (the onnx extra)

    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(values.astype(np.float32), name))


def _prelude(helper: Any, target: str, dtype: int, raw: Normalization | None, rank: int) -> list[Any]:
    """Nodes from the normalised float32 input to the graph's own input name."""
    nodes, current = [], INPUT
    if raw is not None:
        shape = (-1,) + (1,) * (rank - 2) if rank > 2 else (-1,)
        std = (np.asarray(raw.std, np.float64) * raw.scale).reshape(shape)
        mean = (np.asarray(raw.mean, np.float64) * raw.scale).reshape(shape)
        nodes += [_const(helper, "edgekd_std", std), _const(helper, "edgekd_mean", mean),
                  helper.make_node("Mul", [current, "edgekd_std"], ["edgekd_scaled"]),
                  helper.make_node("Add", ["edgekd_scaled", "edgekd_mean"], ["edgekd_raw"])]
        current = "edgekd_raw"
    if dtype == _DOUBLE:
        nodes.append(helper.make_node("Cast", [current], [target], to=_DOUBLE))
    else:
        nodes.append(helper.make_node("Identity", [current], [target]))
    return nodes


def _epilogue(helper: Any, source: str, dtype: int, kind: str) -> list[Any]:
    nodes, current = [], source
    if dtype == _DOUBLE:
        nodes.append(helper.make_node("Cast", [current], ["edgekd_scores"], to=_FLOAT))
        current = "edgekd_scores"
    if kind.startswith("probabilities"):
        nodes += [_const(helper, "edgekd_floor", np.asarray(PROB_FLOOR)),
                  helper.make_node("Max", [current, "edgekd_floor"], ["edgekd_clipped"]),
                  helper.make_node("Log", ["edgekd_clipped"], [OUTPUT])]
    else:
        nodes.append(helper.make_node("Identity", [current], [OUTPUT]))
    return nodes


def _rename_reserved(model: Any) -> Any:
    """A copy whose tensors don't use edgekd's names (a user's graph often calls its output ``logits`` too)."""
    import onnx  # lazy: optional heavy dependency (the onnx extra)

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    g = copy.graph
    used = {n for node in g.node for n in [*node.input, *node.output]} | {i.name for i in g.input}
    for name in (INPUT, OUTPUT) + _INTERNAL:
        if name not in used:
            continue
        new = f"{name}_user"
        for node in g.node:
            node.input[:] = [new if n == name else n for n in node.input]
            node.output[:] = [new if n == name else n for n in node.output]
        for vi in [*g.input, *g.output, *g.value_info]:
            if vi.name == name:
                vi.name = new
        for init in g.initializer:
            if init.name == name:
                init.name = new
    return copy


def prepare_onnx(model: Any, input_shape: tuple[int, ...], num_classes: int, raw: Normalization | None,
                 classes: list[str] | None, label: str) -> PreparedOnnx:
    """The user's graph with edgekd's input and output contract (see the module doc), checked against the data."""
    import onnx  # lazy: optional heavy dependency (the onnx extra)
    from onnx import helper  # lazy: optional heavy dependency (the onnx extra)

    model = _rename_reserved(model)
    graph = model.graph
    ml_ops = sorted({n.op_type for n in graph.node if n.domain == "ai.onnx.ml" and n.op_type != "ZipMap"})
    labels = _class_labels(graph)
    if labels is not None and classes is not None and labels != list(classes):
        raise EdgekdError(f"ONNX teacher {label} predicts classes {labels[:20]}; the data's classes are "
                          f"{list(classes)[:20]}", "train the teacher on this data's labels")
    inp, batch = _input(graph, input_shape, label)
    source, dtype, kind = _logits_source(graph, ml_ops, label)
    nodes = _prelude(helper, inp.name, inp.type.tensor_type.elem_type, raw, 1 + len(input_shape))
    nodes += list(graph.node) + _epilogue(helper, source, dtype, kind)
    nodes = [n for n in nodes if n.op_type != "ZipMap"]
    new_input = helper.make_tensor_value_info(INPUT, _FLOAT, [batch or "N", *input_shape])
    new_output = helper.make_tensor_value_info(OUTPUT, _FLOAT, [batch or "N", num_classes])
    others = [i for i in graph.input if i.name != inp.name]
    new_graph = helper.make_graph(nodes, graph.name or "teacher", [new_input, *others], [new_output],
                                  list(graph.initializer), value_info=list(graph.value_info))
    opsets = {o.domain: o.version for o in model.opset_import}
    opsets[""] = max(opsets.get("", 0), 13)
    out = helper.make_model(new_graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                            producer_name="edgekd", ir_version=model.ir_version)
    try:
        onnx.checker.check_model(out)
    except Exception as exc:  # noqa: BLE001
        raise EdgekdError(f"ONNX teacher {label} is not a valid graph after edgekd's input/output wrapping: "
                          f"{str(exc)[:300]}", "check the file with onnx.checker.check_model") from None
    return PreparedOnnx(out, batch, kind, ml_ops)


def count_onnx_cost(model: Any, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(parameters, MACs for one sample): initializer and tree-node counts; Conv/Gemm/MatMul MACs from shapes."""
    import onnx  # lazy: optional heavy dependency (the onnx extra)
    from onnx import helper  # lazy: optional heavy dependency (the onnx extra)

    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    params += sum(len(a.floats) for n in model.graph.node if n.domain == "ai.onnx.ml" for a in n.attribute
                  if a.name == "nodes_values")
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    fixed.graph.input[0].CopyFrom(helper.make_tensor_value_info(INPUT, _FLOAT, [1, *input_shape]))
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed).graph
    except Exception:  # noqa: BLE001 - a graph shape inference can't follow: MACs unknown (0)
        return params, 0
    shapes = {v.name: _dims(v) for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    shapes.update({i.name: list(i.dims) for i in inferred.initializer})
    macs = 0
    for node in inferred.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out or not all(isinstance(d, int) for d in out):
            continue
        if node.op_type == "Conv" and node.input[1] in shapes:
            kernel = shapes[node.input[1]]  # (Cout, Cin/groups, kh, kw)
            macs += int(np.prod(out)) * int(np.prod(kernel[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            if a and isinstance(a[-1], int):
                k = a[0] if node.op_type == "Gemm" and _attr(node, "transA") else a[-1]
                macs += int(np.prod(out)) * int(k)
    return params, macs


def _attr(node: Any, name: str) -> int:
    return next((a.i for a in node.attribute if a.name == name), 0)
