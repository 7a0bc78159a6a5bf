"""Accuracy-aware int8: the target's ``max_quantization_drop`` is a contract, not a hope.

Plain post-training int8 can lose accuracy silently, and usually a few layers cause most of the loss (an
activation range dominated by outliers, a depthwise conv with few weights per channel). Keeping exactly those
layers in float restores the accuracy while the rest stays int8:

* ONNX: onnxruntime's ``nodes_to_exclude``. A sensitivity pass quantizes the model once per candidate node with
  that node left in float and ranks nodes by how much accuracy (then logit error) that recovers; nodes are then
  kept in float greedily, most sensitive first, until the contract holds.
* OpenVINO: ``nncf.quantize_with_accuracy_control`` (NNCF's own ranking + reverting), with ``max_drop`` absolute.

Either way the result lists the layers that stayed float and what they cost in latency against plain int8,
measured in the same run. When no int8 model within ``max_float_fraction`` of float layers meets the contract
(or the fp32 model itself misses ``min_accuracy``), a ``ContractError`` says what the best attempt reached and
nothing is written.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import Calibration
from edgekd.compress.int8_divergence import DEFAULT_SAMPLES, Divergence, explain_onnx
from edgekd.data.inputs import model_input
from edgekd.errors import ContractError, EdgekdError

# Ops whose inputs onnxruntime's QDQ quantizer quantizes and that carry most of the compute (and the error).
SENSITIVE_OP_TYPES = ("Conv", "Gemm", "MatMul", "ConvTranspose")
EvalSet = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class QuantContract:
    """``max_drop``: fp32 accuracy minus int8 accuracy, absolute, on every evaluation split given.
    ``min_accuracy``: an absolute floor for the int8 model (e.g. min_accuracy_ratio x teacher accuracy)."""

    max_drop: float
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_drop <= 1.0:
            raise EdgekdError(f"max_quantization_drop must lie in [0, 1], got {self.max_drop}", "use e.g. 0.01")


@dataclass
class QuantJob:
    """What a backend's accuracy-aware int8 search gets: the model, its fp32 and plain-int8 artifacts in this
    format, real calibration data and the validation split. Never the test split: the gate scores that once."""

    model: Any  # the PyTorch student (nn.Module)
    sample: np.ndarray
    fp32: Path
    plain: Any  # edgekd.backends.Artifact: the plain int8 that broke the contract (its details, e.g. the scheme)
    out: Path
    calibration: Calibration
    val: EvalSet
    contract: QuantContract
    max_float_fraction: float = 0.5
    threads: int = 1
    timing_x: np.ndarray | None = None
    log: Callable[[str], None] | None = None


@dataclass
class Attempt:
    float_layers: list[str]
    accuracy: list[float]  # per evaluation split
    drop: list[float]
    met: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AccuracyAwareResult:
    """What was shipped (``path``), which layers stayed float, and what that cost against plain int8."""

    path: Path
    format: str
    method: str
    contract: QuantContract
    fp32_accuracy: list[float]
    plain_int8_accuracy: list[float]
    accuracy: list[float]
    drop: list[float]
    float_layers: list[str]
    quantized_layers: int
    candidate_layers: int
    attempts: list[Attempt]
    sensitivity: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)  # fp32 / plain_int8 / shipped p50, same run
    latency_cost: float | None = None  # shipped p50 / plain int8 p50 - 1
    summary: str = ""
    float_tensors: list[str] = field(default_factory=list)  # ONNX: the activation tensors kept float
    # Where plain int8 diverged from fp32, per layer (edgekd.compress.int8_divergence), when it broke the contract
    int8_divergence: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean()) if len(y) else 0.0


def _fmt(values: Sequence[float]) -> str:
    return "/".join(f"{v:.4f}" for v in values)


def _contract_unmet(what: str, contract: QuantContract, attempts: list[Attempt], cap: int, total: int,
                    units: str, unit: str, fp32_acc: list[float]) -> ContractError:
    """The error when no float-layer budget meets the contract, naming the best attempt; nothing ships."""
    best = max(attempts, key=lambda a: (min(a.accuracy), -len(a.float_layers)))
    return ContractError(
        f"no {what} model meets the accuracy contract (max drop {contract.max_drop}"
        + (f", min accuracy {contract.min_accuracy}" if contract.min_accuracy is not None else "")
        + f") with at most {cap} of {total} {units} in float: the best attempt kept "
        f"{len(best.float_layers)} {unit} float {best.float_layers} and reached accuracy "
        f"{_fmt(best.accuracy)} vs fp32 {_fmt(fp32_acc)} (drop {_fmt(best.drop)}); nothing was shipped",
        "relax max_quantization_drop, allow fp16/fp32 in the target, raise max_float_fraction, or use "
        "quantization-aware training (edgekd.compress.qat)")


def _check_sets(eval_sets: Sequence[EvalSet]) -> list[EvalSet]:
    sets = [(model_input(x), np.asarray(y)) for x, y in eval_sets]
    if not sets or any(len(y) == 0 for _, y in sets):
        raise EdgekdError("accuracy-aware quantization needs a non-empty evaluation split",
                          "pass the validation split (x_val, y_val)")
    return sets


def _contract_met(contract: QuantContract, acc: list[float], fp32: list[float]) -> tuple[bool, list[float]]:
    drops = [f - a for f, a in zip(fp32, acc, strict=True)]
    ok = all(d <= contract.max_drop + 1e-12 for d in drops)
    if contract.min_accuracy is not None:
        ok = ok and all(a >= contract.min_accuracy - 1e-12 for a in acc)
    return ok, drops


def _measure_interleaved(paths: dict[str, tuple[Path, str]], x: np.ndarray, threads: int) -> dict[str, float]:
    from edgekd.timing import measure_interleaved

    return measure_interleaved(paths, x, threads).medians()


def _check_fp32_floor(contract: QuantContract, fp32_acc: list[float]) -> None:
    if contract.min_accuracy is not None and min(fp32_acc) < contract.min_accuracy:
        raise ContractError(
            f"no precision can meet the accuracy contract: even the fp32 model reaches only "
            f"{min(fp32_acc):.4f} < min_accuracy {contract.min_accuracy:.4f}; nothing was shipped",
            "relax min_accuracy_ratio in the target, or train a better student/teacher")


def _check_fraction(max_float_fraction: float) -> None:
    if not 0.0 <= max_float_fraction <= 1.0:
        raise EdgekdError(f"max_float_fraction must lie in [0, 1], got {max_float_fraction}", "use e.g. 0.5")


@dataclass
class Scored:
    """One quantization with a given set of float layers, scored in the real runtime on every split."""

    accuracy: list[float]
    logit_mse: float
    path: Path
    details: dict[str, Any] = field(default_factory=dict)


def score_logits(session, sets: list[EvalSet], references: list[np.ndarray]) -> tuple[list[float], float]:
    """(accuracy per split, mean squared logit error vs the fp32 references) of a loaded int8 session."""
    accs, errs = [], []
    for (x, y), ref in zip(sets, references, strict=True):
        logits = session.run_batched(x)
        accs.append(_accuracy(logits, y))
        errs.append(float(np.mean((logits - ref) ** 2)))
    return accs, float(np.mean(errs))


@dataclass(frozen=True)
class Candidate:
    """A choice the greedy search can make: ``label`` for the report, ``members`` the layers it keeps float."""

    label: str
    members: tuple[str, ...]


@dataclass
class Search:
    """The greedy float-layer search's outcome: what stayed float and the model that met (or missed) the contract."""

    labels: list[str]
    members: list[str]
    final: Scored
    drops: list[float]
    attempts: list[Attempt]
    met: bool


def greedy_float_search(score: Callable[[list[str]], Scored], ranked: Sequence[Candidate],
                        cost: Callable[[list[str]], int], cap: int, contract: QuantContract, fp32_acc: list[float],
                        plain: Scored, say: Callable[[str], None], what: str) -> Search:
    """Keep candidates float, most sensitive first, until the contract holds or the float budget (``cap``, in
    units of ``cost``) is spent: shared by the ONNX and TFLite searches."""
    ok, drops = _contract_met(contract, plain.accuracy, fp32_acc)
    search = Search([], [], plain, drops, [Attempt([], plain.accuracy, drops, ok)], ok)
    if ok or cap <= 0:
        return search
    for candidate in ranked:
        trial = list(dict.fromkeys(search.members + list(candidate.members)))
        if cost(trial) > cap or trial == search.members:
            continue
        search.members, search.labels = trial, [*search.labels, candidate.label]
        scored = score(trial)
        ok, drops = _contract_met(contract, scored.accuracy, fp32_acc)
        search.attempts.append(Attempt(list(trial), scored.accuracy, drops, ok))
        say(f"{what} contract: keep {candidate.label} float ({len(trial)} float) -> accuracy "
            f"{_fmt(scored.accuracy)}, drop {_fmt(drops)}")
        if ok:
            search.final, search.drops, search.met = scored, drops, True
            break
    return search


def _latency_cost(timing_x: np.ndarray | None, threads: int, fp32: tuple[Path, str], plain: Path,
                  shipped: Path | None) -> tuple[dict[str, float], float | None]:
    """p50 of fp32, plain int8 and the shipped model, interleaved in one run, and the float layers' cost."""
    if timing_x is None:
        return {}, None
    paths = {"fp32": fp32, "plain_int8": (plain, "int8")}
    if shipped is not None:
        paths["shipped"] = (shipped, "int8")
    latency = _measure_interleaved(paths, model_input(timing_x), threads)
    latency.setdefault("shipped", latency["plain_int8"])
    return latency, latency["shipped"] / latency["plain_int8"] - 1.0


def _place(final: Path, out: Path) -> Path:
    """Copy the chosen model to ``out`` by one rename: never a half-written artifact there."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f".{out.stem}-", suffix=out.suffix, delete=False) as fh:
        staged = Path(fh.name)
    try:
        shutil.copyfile(final, staged)
        staged.replace(out)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return out


# --------------------------------------------------------------------------------------------- ONNX
ACTIVATION_OP_TYPES = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh")


@dataclass(frozen=True)
class FloatUnit:
    """Keeping activation ``tensor`` float takes all nodes that would quantize it: onnxruntime's QDQ quantizer
    quantizes a tensor at its producer (with a following Relu/Clip fused into it) *and* at each consumer, so
    excluding one node alone leaves the tensor quantized."""

    tensor: str
    nodes: tuple[str, ...]
    compute_nodes: tuple[str, ...]


def _prepped_graph(fp32: Path):
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prep.onnx"
        quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
        return onnx.load(str(prepped)).graph


def onnx_float_units(fp32: Path, int8: Path) -> tuple[list[FloatUnit], list[str]]:
    """The activation tensors plain int8 quantizes, each with the nodes that must stay float to keep it float;
    and all compute nodes (Conv/Gemm/MatMul) of the model."""
    import onnx

    graph = _prepped_graph(fp32)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    initializers = {t.name for t in graph.initializer}
    compute = [n.name for n in graph.node if n.op_type in SENSITIVE_OP_TYPES]
    qgraph = onnx.load(str(int8)).graph
    qinit = {t.name for t in qgraph.initializer}
    units, seen = [], set()
    for n in qgraph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in qinit:
            continue
        tensor = n.input[0].removesuffix("_QuantizeLinear_Input")
        if tensor in initializers or tensor in seen or (tensor not in producer and tensor not in consumers):
            continue
        seen.add(tensor)
        nodes = []
        p = producer.get(tensor)
        if p is not None:
            nodes.append(p)
            if p.op_type in ACTIVATION_OP_TYPES and p.input[0] in producer:
                nodes.append(producer[p.input[0]])
        nodes += consumers.get(tensor, [])
        names = tuple(dict.fromkeys(x.name for x in nodes))
        units.append(FloatUnit(tensor, names, tuple(x for x in names if x in compute)))
    return units, compute


class _OnnxEvaluator:
    """Quantize with a given set of float nodes and score it in onnxruntime on every evaluation split."""

    def __init__(self, fp32: Path, calibration: Calibration, eval_sets: list[EvalSet], scheme: str, work: Path):
        from edgekd.runner import load_session

        self.fp32, self.calibration, self.eval_sets, self.scheme, self.work = fp32, calibration, eval_sets, scheme, work
        session = load_session(str(fp32), 1, "fp32")
        self.fp32_logits = [session.run_batched(x) for x, _ in eval_sets]
        self.fp32_accuracy = [_accuracy(lg, y) for lg, (_, y) in zip(self.fp32_logits, eval_sets, strict=True)]
        self.count = 0

    def score(self, exclude: Sequence[str]) -> Scored:
        from edgekd.backends.onnx import quantize_onnx_int8
        from edgekd.runner import load_session

        self.count += 1
        path = quantize_onnx_int8(self.fp32, self.work / f"q{self.count}.onnx", self.calibration, self.scheme,
                                  nodes_to_exclude=list(exclude))
        accs, err = score_logits(load_session(str(path), 1, "int8"), self.eval_sets, self.fp32_logits)
        return Scored(accs, err, path)


def _onnx_ranked(ev: _OnnxEvaluator, units: list[FloatUnit], plain: Scored, say: Callable[[str], None],
                 ) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """One quantization per activation tensor, that tensor kept float; ranked by accuracy recovered, then error."""
    sensitivity = []
    for unit in units:
        scored = ev.score(unit.nodes)
        sensitivity.append({"tensor": unit.tensor, "nodes": list(unit.nodes), "accuracy": scored.accuracy,
                            "logit_mse": scored.logit_mse,
                            "accuracy_gain": float(np.mean(scored.accuracy) - np.mean(plain.accuracy)),
                            "mse_reduction": plain.logit_mse - scored.logit_mse})
    sensitivity.sort(key=lambda s: (-s["accuracy_gain"], -s["mse_reduction"]))
    say("int8 contract: most sensitive tensors " + ", ".join(
        f"{s['tensor']} (accuracy {s['accuracy_gain']:+.4f}, logit mse {-s['mse_reduction']:+.3g})"
        for s in sensitivity[:5]))
    return [Candidate(s["tensor"], tuple(s["nodes"])) for s in sensitivity], sensitivity


def onnx_accuracy_aware_int8(
    fp32: Path,
    out: Path,
    calibration: Calibration,
    eval_sets: Sequence[EvalSet],
    contract: QuantContract,
    scheme: str = "u8s8",
    max_float_fraction: float = 0.5,
    threads: int = 1,
    timing_x: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
) -> AccuracyAwareResult:
    """Int8 QDQ model of ``fp32`` meeting ``contract`` on ``eval_sets``, with the fewest float layers found.

    ``eval_sets``: (x, y) splits the contract must hold on: the validation split (never the test split, which
    the gate scores once). ``scheme``: the activation/weight scheme plain int8 was built with, so every
    re-quantization uses the same. ``max_float_fraction``: beyond this share of compute layers in float the model
    is no longer meaningfully int8 and the search gives up with a ContractError.
    """
    say = log or (lambda _m: None)
    sets = _check_sets(eval_sets)
    _check_fraction(max_float_fraction)
    with tempfile.TemporaryDirectory() as tmp:
        ev = _OnnxEvaluator(Path(fp32), calibration, sets, scheme, Path(tmp))
        fp32_acc = ev.fp32_accuracy
        _check_fp32_floor(contract, fp32_acc)
        plain = ev.score([])
        units, compute = onnx_float_units(Path(fp32), plain.path)
        cap = int(np.floor(max_float_fraction * len(compute)))
        say(f"int8 contract: plain int8 accuracy {_fmt(plain.accuracy)} vs fp32 {_fmt(fp32_acc)}, allowed drop "
            f"{contract.max_drop}")
        ranked, sensitivity, divergence = [], [], None
        if not _contract_met(contract, plain.accuracy, fp32_acc)[0]:
            divergence = _explain_plain(Path(fp32), plain.path, calibration, say)
            if cap > 0:
                ranked, sensitivity = _onnx_ranked(ev, units, plain, say)
        search = greedy_float_search(lambda members: ev.score(members), ranked,
                                     lambda members: sum(1 for n in members if n in compute), cap, contract,
                                     fp32_acc, plain, say, "int8")
        if not search.met:
            raise _with_divergence(_contract_unmet("int8", contract, search.attempts, cap, len(compute),
                                                   "compute layers", "node(s)", fp32_acc), divergence)
        latency, cost = _latency_cost(timing_x, threads, (Path(fp32), "fp32"), plain.path,
                                      search.final.path if search.members else None)
        _place(search.final.path, out)
    summary = (f"int8 meets the contract (drop {max(search.drops):.4f} <= {contract.max_drop}) with "
               + (f"{len(search.labels)} tensor(s) kept float ({', '.join(search.labels)}), i.e. nodes "
                  f"{', '.join(search.members)}" if search.members else "no layer kept float")
               + (f"; latency vs plain int8 {cost:+.1%}" if cost is not None else ""))
    say("int8 contract: " + summary)
    return AccuracyAwareResult(Path(out), "onnx", f"onnxruntime QDQ ({scheme}) + per-layer sensitivity, greedy "
                               "float fallback", contract, fp32_acc, plain.accuracy, search.final.accuracy,
                               search.drops, search.members,
                               len([n for n in compute if n not in search.members]), len(compute), search.attempts,
                               sensitivity, latency, cost, summary, search.labels,
                               divergence.to_dict() if divergence else None)


def _explain_plain(fp32: Path, plain_int8: Path, calibration: Calibration,
                   say: Callable[[str], None]) -> Divergence:
    """Per-layer SQNR of the plain int8 model that broke the contract: where it diverges, said and recorded."""
    divergence = explain_onnx(fp32, plain_int8, calibration.x[:DEFAULT_SAMPLES])
    say("int8 contract: where plain int8 diverges (own SQNR, dB): " + _worst_layers(divergence))
    return divergence


def _worst_layers(divergence: Divergence, count: int = 3) -> str:
    return ", ".join(f"{layer.layer} {layer.own_sqnr_db:.1f}" for layer in divergence.ranked[:count])


def _with_divergence(error: ContractError, divergence: Divergence | None) -> ContractError:
    """The contract error, naming the layers where plain int8 diverged most (``edgekd explain-int8`` for all)."""
    if divergence is None:
        return error
    return ContractError(f"{error.problem}; plain int8 diverged most at {_worst_layers(divergence)} (own SQNR, dB)",
                         f"{error.fix}; `edgekd explain-int8` on a run ranks every layer")


# --------------------------------------------------------------------------------------------- OpenVINO
def _ov_compute_ops(ov_model) -> tuple[list[str], list[str]]:
    """(quantized, float) compute ops of an OpenVINO model: quantized = weight input fed through FakeQuantize or
    a dequantizing Convert/Multiply chain from int8 constants."""
    quantized, floating = [], []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        is_q = False
        for inp in op.inputs():
            node = inp.get_source_output().get_node()
            for _ in range(4):  # walk back through Multiply/Subtract/Convert/Reshape of a dequantized weight
                kind = node.get_type_name()
                if kind == "FakeQuantize" or (kind == "Constant" and "i8" in str(node.get_element_type())):
                    is_q = True
                    break
                if kind not in ("Convert", "Multiply", "Subtract", "Reshape"):
                    break
                node = node.input_value(0).get_node()
        (quantized if is_q else floating).append(op.get_friendly_name())
    return quantized, floating


def openvino_accuracy_aware_int8(
    fp32_xml_or_onnx: Path,
    out_xml: Path,
    calibration: Calibration,
    eval_set: EvalSet,
    contract: QuantContract,
    threads: int = 1,
    timing_x: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
) -> AccuracyAwareResult:
    """``nncf.quantize_with_accuracy_control`` with ``max_drop`` (absolute) on ``eval_set``; float ops listed."""
    import nncf
    import openvino as ov

    say = log or (lambda _m: None)
    (x_val, y_val), = _check_sets([eval_set])
    logging.getLogger("nncf").setLevel(logging.ERROR)
    core = ov.Core()
    model = core.read_model(str(fp32_xml_or_onnx))

    def validate(compiled, items) -> float:
        """Top-1 accuracy over (x, y) items: NNCF calls it on subsets when ranking, so labels travel with x."""
        hits = [int(np.asarray(compiled(x)[0]).argmax(1)[0] == y) for x, y in items]
        return float(np.mean(hits)) if hits else 0.0

    val_items = [(x_val[i : i + 1], int(y_val[i])) for i in range(len(x_val))]
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    fp32_acc = validate(core.compile_model(model, "CPU", config), val_items)
    _check_fp32_floor(contract, [fp32_acc])
    calib = nncf.Dataset([calibration.x[i : i + 1] for i in range(len(calibration.x))])
    plain = nncf.quantize(model, calib, subset_size=len(calibration.x))
    plain_acc = validate(core.compile_model(plain, "CPU"), val_items)
    if fp32_acc - plain_acc <= contract.max_drop + 1e-12:
        shipped, method = plain, "nncf.quantize (plain int8 met the contract)"
    else:
        shipped = nncf.quantize_with_accuracy_control(
            model, calib, nncf.Dataset(val_items, lambda item: item[0]), validation_fn=validate,
            max_drop=contract.max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration.x))
        method = "nncf.quantize_with_accuracy_control (absolute max_drop)"
    acc = validate(core.compile_model(shipped, "CPU"), val_items)
    q_ops, float_ops = _ov_compute_ops(shipped)
    _, plain_float = _ov_compute_ops(plain)
    kept_float = [n for n in float_ops if n not in plain_float]
    attempts = [Attempt([], [plain_acc], [fp32_acc - plain_acc], fp32_acc - plain_acc <= contract.max_drop + 1e-12)]
    ok, drops = _contract_met(contract, [acc], [fp32_acc])
    attempts.append(Attempt(kept_float, [acc], drops, ok))
    if not ok:
        raise ContractError(
            f"no OpenVINO int8 model meets the accuracy contract (max drop {contract.max_drop}): NNCF's best kept "
            f"{len(kept_float)} op(s) float and reached {acc:.4f} vs fp32 {fp32_acc:.4f}; nothing was shipped",
            "relax max_quantization_drop, or allow fp16/fp32 for openvino in the target")
    out_xml = Path(out_xml)
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    latency: dict[str, float] = {}
    cost = None
    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(shipped, str(out_xml), compress_to_fp16=False)
        if timing_x is not None:
            plain_xml, fp32_xml = Path(tmp) / "plain.xml", Path(tmp) / "fp32.xml"
            ov.save_model(plain, str(plain_xml), compress_to_fp16=False)
            ov.save_model(model, str(fp32_xml), compress_to_fp16=False)
            latency = _measure_interleaved({"fp32": (fp32_xml, "fp32"), "plain_int8": (plain_xml, "int8"),
                                            "shipped": (out_xml, "int8")}, timing_x, threads)
            cost = latency["shipped"] / latency["plain_int8"] - 1.0
    summary = (f"{method}: accuracy {acc:.4f} vs fp32 {fp32_acc:.4f} (plain int8 {plain_acc:.4f}); "
               f"{len(kept_float)} op(s) kept float" + (f": {', '.join(kept_float)}" if kept_float else "")
               + (f"; latency vs plain int8 {cost:+.1%}" if cost is not None else ""))
    say("openvino int8 contract: " + summary)
    return AccuracyAwareResult(out_xml, "openvino", method, contract, [fp32_acc], [plain_acc], [acc], drops,
                               kept_float, len(q_ops), len(q_ops) + len(float_ops), attempts, [], latency, cost,
                               summary)


# --------------------------------------------------------------------------------------------- TFLite
# The ops ai-edge-quantizer's static int8 recipe quantizes that carry the compute (and the error).
TFLITE_SENSITIVE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL",
                        "CONV_3D", "EMBEDDING_LOOKUP")


def _tflite_label(index: int, op: str, scope: str) -> str:
    """A readable name for an op: its type and the module path of its first output tensor (litert-torch names
    tensors after the nn.Module stack, e.g. '...TwoConv/torch.nn.modules.conv.Conv2d_c1')."""
    tail = scope.rstrip(";").rsplit("/", 1)[-1].split(";")[0].rsplit(".", 1)[-1]
    return f"{op}#{index} {tail}"


def _tflite_ranked(score: Callable[[list[str]], Scored], labels: list[str], plain: Scored, fp32_acc: list[float],
                   say: Callable[[str], None]) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Two quantizations per op: all int8 but this op, and all float but this op. The first finds an op whose float
    compute alone recovers accuracy; the second breaks its ties, e.g. when the harm is in a tensor that the op
    producing it and the ops reading it all quantize."""
    sensitivity = []
    for label in labels:
        alone_float = score([label])
        alone_int8 = score([n for n in labels if n != label])
        sensitivity.append({"op": label, "accuracy": alone_float.accuracy, "logit_mse": alone_float.logit_mse,
                            "accuracy_gain": float(np.mean(alone_float.accuracy) - np.mean(plain.accuracy)),
                            "mse_reduction": plain.logit_mse - alone_float.logit_mse,
                            "alone_accuracy_loss": float(np.mean(fp32_acc) - np.mean(alone_int8.accuracy)),
                            "alone_logit_mse": alone_int8.logit_mse})
    sensitivity.sort(key=lambda s: (-s["accuracy_gain"], -s["alone_accuracy_loss"], -s["mse_reduction"],
                                    -s["alone_logit_mse"]))
    say("tflite int8 contract: most sensitive ops " + ", ".join(
        f"{s['op']} (float alone: accuracy {s['accuracy_gain']:+.4f}; int8 alone: accuracy "
        f"{-s['alone_accuracy_loss']:+.4f}, logit mse {s['alone_logit_mse']:.3g})" for s in sensitivity[:5]))
    return [Candidate(s["op"], (s["op"],)) for s in sensitivity], sensitivity


def tflite_accuracy_aware_int8(
    model,
    sample: np.ndarray,
    out: Path,
    calibration: Calibration,
    eval_sets: Sequence[EvalSet],
    contract: QuantContract,
    integer_io: bool = False,
    max_float_fraction: float = 0.5,
    threads: int = 1,
    timing_x: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
) -> AccuracyAwareResult:
    """Full-int8 .tflite of ``model`` (ai-edge-quantizer static recipe, as ``TfliteBackend``) meeting ``contract``
    on ``eval_sets`` (the validation split), with the fewest float ops found.

    Plain int8 first; when it breaks the contract, each compute op (conv/depthwise/fully-connected...) is ranked
    by ``_tflite_ranked`` (AEQ ``no_quantize`` recipe entries matched on the op's scope) and kept float greedily,
    most sensitive first, until the contract holds. Calibration (whole-set min/max) runs once and is reused by
    every attempt. More than ``max_float_fraction`` of the compute ops in float: ``ContractError``, nothing
    written at ``out``.
    """
    from edgekd.backends.tflite import cached_fp32, calibrate, op_scopes, quantize
    from edgekd.runner import load_session

    say = log or (lambda _m: None)
    sets = _check_sets(eval_sets)
    _check_fraction(max_float_fraction)
    if tuple(calibration.x.shape[1:]) != tuple(sample.shape[1:]):
        raise EdgekdError(
            f"the calibration set has sample shape {list(calibration.x.shape[1:])} but the model takes "
            f"{list(sample.shape[1:])}", "rebuild it with `edgekd calibrate` for this target's data")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32 = work / "fp32.tflite"
        cached_fp32(model, sample, fp32)
        session = load_session(str(fp32), 1, "fp32")
        fp32_logits = [session.run_batched(x) for x, _ in sets]
        fp32_acc = [_accuracy(lg, y) for lg, (_, y) in zip(fp32_logits, sets, strict=True)]
        _check_fp32_floor(contract, fp32_acc)
        qsvs = calibrate(fp32, calibration)
        scope_of = {_tflite_label(i, op, scope): scope
                    for i, (op, scope) in enumerate(op_scopes(fp32, TFLITE_SENSITIVE_OPS))}
        count = [0]

        def score(float_labels: list[str]) -> Scored:
            count[0] += 1
            path = work / f"q{count[0]}.tflite"
            details = quantize(fp32, path, "int8", calibration, integer_io,
                               float_ops=[scope_of[n] for n in float_labels], qsvs=qsvs)
            accs, err = score_logits(load_session(str(path), 1, "int8"), sets, fp32_logits)
            return Scored(accs, err, path, details)

        plain = score([])
        cap = int(np.floor(max_float_fraction * len(scope_of)))
        say(f"tflite int8 contract: plain int8 accuracy {_fmt(plain.accuracy)} vs fp32 {_fmt(fp32_acc)}, allowed "
            f"drop {contract.max_drop}")
        ranked, sensitivity = [], []
        if not _contract_met(contract, plain.accuracy, fp32_acc)[0] and cap > 0:
            ranked, sensitivity = _tflite_ranked(score, list(scope_of), plain, fp32_acc, say)
        search = greedy_float_search(score, ranked, len, cap, contract, fp32_acc, plain, say, "tflite int8")
        if not search.met:
            raise _contract_unmet("TFLite int8", contract, search.attempts, cap, len(scope_of), "compute ops",
                                  "op(s)", fp32_acc)
        latency, cost = _latency_cost(timing_x, threads, (fp32, "fp32"), plain.path,
                                      search.final.path if search.members else None)
        _place(search.final.path, out)
    chosen = search.members
    summary = (f"tflite int8 meets the contract (drop {max(search.drops):.4f} <= {contract.max_drop}) with "
               + (f"{len(chosen)} op(s) kept float ({', '.join(chosen)})" if chosen else "no op kept float")
               + (f"; latency vs plain int8 {cost:+.1%}" if cost is not None else ""))
    say("tflite int8 contract: " + summary)
    method = ("ai-edge-quantizer static int8 (whole-set min/max) + per-op sensitivity, greedy float fallback "
              f"({search.final.details.get('quantizer', '')})")
    return AccuracyAwareResult(Path(out), "tflite", method, contract, fp32_acc, plain.accuracy, search.final.accuracy,
                               search.drops, chosen, len(scope_of) - len(chosen), len(scope_of), search.attempts,
                               sensitivity, latency, cost, summary)
