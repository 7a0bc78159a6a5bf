"""Where int8 diverges from fp32, layer by layer: the explanation a failed int8 contract owes its user.

For each quantized layer (a node whose weight the int8 graph dequantizes) three signal-to-quantization-noise ratios
in dB, 20 log10(|reference| / |reference - int8|), over the same samples:

* ``weight_sqnr_db``: the layer's float weights against their int8 round trip, per output channel, the median
  channel (what the weight grid costs: one outlier channel that stretches a per-tensor grid leaves the whole
  tensor's SQNR high, since it holds most of the energy, while every other channel is crushed);
* ``output_sqnr_db``: the layer's output in the fp32 model against the same tensor in the int8 model (everything
  upstream included: where the divergence has accumulated to); where a following activation (ReLU, Clip, ...) is
  fused into the layer, the tensor compared is that activation's output;
* ``activation_sqnr_db``: the layer's quantized output inside the int8 graph, before against after its own
  quantize step, so upstream noise is left out (what the activation grid costs, on the inputs that layer really
  sees). A quantizer that fuses a ReLU drops the ReLU node and starts the grid at zero, so "before" still holds the
  negatives the ReLU would have removed: where the grid starts at exactly zero, "before" is clipped there first.

Layers are ranked by their own noise, ``min(weight, activation)``: an outlier channel that stretches a per-tensor
weight grid, or an activation range that crushes the rest, puts its layer first. ``first_below`` is the first layer
in graph order whose accumulated ``output_sqnr_db`` falls under the threshold: where the int8 model starts to drift.

The ONNX path uses onnxruntime's own tools (``onnxruntime.quantization.qdq_loss_debug``: the weight matching, the
activation capture of both graphs and its SQNR function) rather than a re-implementation. One explainer per format
in ``EXPLAINERS``; a format without one is named, never silently skipped.
"""

from __future__ import annotations

import ast
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekd.data.inputs import model_input
from edgekd.errors import EdgekdError

DEFAULT_THRESHOLD_DB = 20.0  # int8 per-channel weights sit near 40 dB; 20 dB is 10 % noise in amplitude
DEFAULT_SAMPLES = 64
INFINITE_DB = 200.0  # an exact round trip (e.g. a zero tensor): capped so JSON stays finite
# Element-wise ops a quantizer fuses into the layer before it: the layer's quantized output is theirs.
FUSED_AFTER = frozenset({"Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "BatchNormalization"})


@dataclass(frozen=True)
class LayerDivergence:
    """One quantized layer's SQNRs (dB); ``order`` is its position in the graph."""

    layer: str  # the PyTorch module path where the exporter recorded it, else the graph node's name
    node: str
    op_type: str
    order: int
    weight_sqnr_db: float | None
    activation_sqnr_db: float | None
    output_sqnr_db: float | None

    @property
    def own_sqnr_db(self) -> float:
        """The noise this layer adds by itself: its worse grid (weights or activations)."""
        own = [v for v in (self.weight_sqnr_db, self.activation_sqnr_db) if v is not None]
        return min(own) if own else INFINITE_DB


@dataclass(frozen=True)
class Divergence:
    """Every quantized layer, ranked worst first, and where the accumulated divergence first crosses the threshold."""

    format: str
    artifact: str
    samples: int
    threshold_db: float
    ranked: list[LayerDivergence]
    first_below: str | None
    tool: str

    def to_dict(self) -> dict:
        return {"format": self.format, "artifact": self.artifact, "samples": self.samples,
                "threshold_db": self.threshold_db, "first_below_threshold": self.first_below, "tool": self.tool,
                "layers": [{**asdict(layer), "own_sqnr_db": layer.own_sqnr_db, "rank": rank + 1}
                           for rank, layer in enumerate(self.ranked)]}


def rank(layers: list[LayerDivergence], threshold_db: float) -> tuple[list[LayerDivergence], str | None]:
    """Worst own noise first (ties by graph order); the first layer in graph order under the threshold."""
    ranked = sorted(layers, key=lambda item: (item.own_sqnr_db, item.order))
    in_order = sorted(layers, key=lambda item: item.order)
    first = next((item.layer for item in in_order
                  if item.output_sqnr_db is not None and item.output_sqnr_db < threshold_db), None)
    return ranked, first


def _db(value: float) -> float:
    return round(min(float(value), INFINITE_DB), 2) if math.isfinite(value) else INFINITE_DB


# ------------------------------------------------------------------------------------------------ ONNX
class _Samples:
    """onnxruntime's CalibrationDataReader protocol over a float32 array, one sample per run (batch-1 graphs)."""

    def __init__(self, input_name: str, x: np.ndarray) -> None:
        self._items: Iterator[dict[str, np.ndarray]] = iter(
            [{input_name: model_input(x[i:i + 1])} for i in range(len(x))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self._items


def explain_onnx(fp32: Path, int8: Path, samples: np.ndarray, threshold_db: float = DEFAULT_THRESHOLD_DB) -> Divergence:
    """Per-layer SQNR of a QDQ int8 ONNX model against the fp32 model it was quantized from."""
    import onnx  # lazy: optional heavy dependency (the onnx extra)
    import onnxruntime  # lazy: optional heavy dependency (the onnx extra)
    from onnxruntime.quantization import qdq_loss_debug as qdq  # lazy: optional heavy dependency (the onnx extra)

    float_model = onnx.load(str(fp32))
    input_name = float_model.graph.input[0].name
    weights = qdq.compute_weight_error(qdq.create_weight_matching(str(fp32), str(int8)), median_channel_sqnr)
    with tempfile.TemporaryDirectory(prefix="edgekd-explain-") as tmp:
        captured = {}
        for role, path in (("float", fp32), ("int8", int8)):
            augmented = Path(tmp) / f"{role}.onnx"
            qdq.modify_model_output_intermediate_tensors(str(path), str(augmented))
            captured[role] = qdq.collect_activations(str(augmented), _Samples(input_name, samples))
    matched = qdq.create_activation_matching(captured["int8"], captured["float"])
    shapes = tensor_shapes(float_model)
    floors = grid_floors(onnx.load(str(int8)))
    output_db, local_db = {}, {}
    for name, m in matched.items():
        shape = shapes.get(name)
        post = np.stack(m["post_qdq"])
        local_db[name] = median_channel_sqnr(np.maximum(np.stack(m["pre_qdq"]), floors.get(name, -np.inf)), post,
                                             shape)
        if m.get("float") is not None:
            output_db[name] = median_channel_sqnr(np.stack(m["float"]), post, shape)
    layers = []
    for order, node in enumerate(float_model.graph.node):
        weight = next((name for name in node.input if name in weights), None)
        if weight is None:
            continue
        tensor = quantized_output(float_model.graph, node, local_db)
        layers.append(LayerDivergence(
            layer=module_path(node) or node.name or node.output[0], node=node.name, op_type=node.op_type, order=order,
            weight_sqnr_db=_db(weights[weight]),
            activation_sqnr_db=_db(local_db[tensor]) if tensor in local_db else None,
            output_sqnr_db=_db(output_db[tensor]) if tensor in output_db else None))
    if not layers:
        raise EdgekdError(f"{int8.name} has no quantized weights matching {fp32.name}",
                          "pass the int8 QDQ model and the fp32 model it was quantized from")
    ranked, first = rank(layers, threshold_db)
    return Divergence("onnx", int8.name, len(samples), threshold_db, ranked, first,
                      f"onnxruntime {onnxruntime.__version__} quantization.qdq_loss_debug")


def by_channel(values: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    """(channels, everything else). Weights: channels on axis 0 (Conv, Gemm). Activations (``shape`` of one batch-1
    sample, samples stacked on axis 0): channels on axis 1 of ``shape``, over all samples and positions."""
    values = np.asarray(values, dtype=np.float64)
    if shape is not None and len(shape) >= 2 and values.size == len(values) * int(np.prod(shape[1:])):
        return np.moveaxis(values.reshape(len(values), shape[1], -1), 1, 0).reshape(shape[1], -1)
    return values.reshape(len(values), -1) if values.ndim > 1 else values.reshape(1, -1)


def median_channel_sqnr(reference: np.ndarray, quantized: np.ndarray, shape: tuple[int, ...] | None = None) -> float:
    """SQNR (dB) of each channel, the median channel (an outlier channel cannot hide the ones it crushed)."""
    ref, noise = by_channel(reference, shape), by_channel(reference, shape) - by_channel(quantized, shape)
    eps = np.finfo(np.float32).eps
    per_channel = 20.0 * np.log10(np.maximum(np.linalg.norm(ref, axis=1), eps)
                                  / np.maximum(np.linalg.norm(noise, axis=1), eps))
    return float(np.median(per_channel))


def tensor_shapes(model) -> dict[str, tuple[int, ...]]:
    """Static shapes of the graph's tensors (onnx shape inference); unknown dimensions leave a tensor out."""
    import onnx  # lazy: optional heavy dependency (the onnx extra)

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = [d.dim_value for d in info.type.tensor_type.shape.dim]
        if dims and all(d > 0 for d in dims):
            shapes[info.name] = tuple(dims)
    return shapes


def grid_floors(int8_model) -> dict[str, float]:
    """Tensors whose activation grid starts at exactly zero (a fused ReLU): tensor name -> 0.0."""
    from onnx import numpy_helper  # lazy: optional heavy dependency (the onnx extra)

    consts = {init.name: numpy_helper.to_array(init) for init in int8_model.graph.initializer}
    floors = {}
    for node in int8_model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or node.input[2] not in consts:
            continue
        zero_point = consts[node.input[2]]
        if zero_point.size == 1 and int(zero_point.reshape(())) == np.iinfo(zero_point.dtype).min:
            floors[node.input[0]] = 0.0
    return floors


def module_path(node) -> str | None:
    """The PyTorch module a node came from, as torch.onnx's exporter records it (``pkg.torch.onnx.name_scopes``:
    the module path then the op; after a BatchNorm fold the scope is the folded BatchNorm's)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes" and len(prop.value) <= 4096:  # a file's text: bounded
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError, RecursionError, MemoryError):
                return None
            return str(scopes[-2]) if isinstance(scopes, list) and len(scopes) >= 2 and scopes[-2] else None
    return None


def quantized_output(graph, node, errors: dict) -> str:
    """The tensor that carries ``node``'s quantized output: its own, or that of the activation fused after it."""
    tensor = node.output[0]
    for _ in range(3):
        if tensor in errors:
            return tensor
        consumers = [n for n in graph.node if tensor in n.input]
        if len(consumers) != 1 or consumers[0].op_type not in FUSED_AFTER:
            return tensor
        tensor = consumers[0].output[0]
    return tensor


Explainer = Callable[[Path, Path, np.ndarray, float], Divergence]
EXPLAINERS: dict[str, Explainer] = {"onnx": explain_onnx}


def explain(fmt: str, fp32: Path, int8: Path, samples: np.ndarray,
            threshold_db: float = DEFAULT_THRESHOLD_DB) -> Divergence:
    """The per-layer divergence of ``int8`` from ``fp32`` in ``fmt``'s own tooling."""
    explainer = EXPLAINERS.get(fmt)
    if explainer is None:
        raise EdgekdError(f"no per-layer int8 explanation for the {fmt} format yet (have: {', '.join(EXPLAINERS)})",
                          "explain the run's ONNX int8 artifact, or build one with the onnx format")
    return explainer(fp32, int8, model_input(samples), threshold_db)
