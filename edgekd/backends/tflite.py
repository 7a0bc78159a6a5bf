"""TFLite / LiteRT: fp32, fp16, dynamic-range int8 and full-integer int8, without TensorFlow.

``litert-torch`` converts the module to a float .tflite; every smaller precision is then made from that file by
``ai-edge-quantizer`` (AEQ), so all four precisions share one converted graph:

* ``fp16``: fp16 weights dequantized at load (float compute, half the size);
* ``dynamic_int8``: int8 weights, float activations quantized on the fly (no calibration);
* ``int8``: int8 weights (per channel) and int8 activations, calibrated on ``calibration.x``.

Why AEQ and not PT2E (``litert_torch.quantize``): PT2E re-exports and re-converts the module (about 3x slower
here), needs ``torchao`` at build time, and always gives int8 graph inputs, whereas AEQ works on the .tflite we
already have and chooses float or int8 I/O through its recipe. Both kept top-1 parity on the students.

AEQ's default calibration smooths each tensor's min/max with a moving average (0.95), which clips the tails of
normalised inputs and of the logits (a 3x larger error on the MLP here); we use the plain min/max over the whole
calibration set instead, as the ONNX and OpenVINO backends do.

Layout: the artifact keeps the NCHW input PyTorch has (``layout`` in the details is read back from the file).
The converter turns it into NHWC inside the graph with one leading op (a free RESHAPE for 1-channel images, a
TRANSPOSE otherwise), which every delegate supports; NHWC I/O would save that op but make a batch ambiguous to
feed whenever C equals H or W.

Its accuracy-aware int8 search (AEQ ``no_quantize`` recipe entries per op, on the generic search of
``edgekd.compress.accuracy_aware``) lives here too.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.backends import Artifact, Calibration, require
from edgekd.compress import accuracy_aware as aa
from edgekd.data.inputs import model_input
from edgekd.errors import EdgekdError
from edgekd.runner import load_session
from edgekd.targets import TargetProfile

_QUANT_OPS = {"QUANTIZE", "DEQUANTIZE"}
# Ops with no arithmetic: they carry whatever dtype flows through them.
_SHAPE_OPS = {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "PAD", "DELEGATE"}
# The float .tflite every precision starts from, by model content: a build exports one student at several
# precisions (and integer_io or not), and each conversion costs seconds.
_FP32_CACHE: dict[str, tuple[bytes, str]] = {}
_FP32_CACHE_SIZE = 4


class TfliteBackend:
    name = "tflite"
    precisions = ("fp32", "fp16", "dynamic_int8", "int8")

    def __init__(self, integer_io: bool = False) -> None:
        """``integer_io``: int8 artifacts take and return int8 tensors (full-integer, e.g. for NNAPI NPUs)."""
        self.integer_io = integer_io

    @classmethod
    def from_target(cls, target: TargetProfile) -> TfliteBackend:
        return cls(integer_io=target.runtime.integer_io)

    def list_operators(self, path: Path) -> dict[str, int]:
        from ai_edge_litert.interpreter import OpResolverType  # lazy: optional heavy dependency (the tflite extra)

        with quiet():
            interp = _interpreter_cls()(model_path=str(path),
                                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        counts: dict[str, int] = {}
        for op in interp._get_ops_details():  # noqa: SLF001 - the interpreter's only op listing
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
        return counts

    def accuracy_aware_int8(self, job: aa.QuantJob) -> aa.AccuracyAwareResult:
        return tflite_accuracy_aware_int8(job.model, job.sample, job.out, job.calibration, [job.val], job.contract,
                                          integer_io=self.integer_io, max_float_fraction=job.max_float_fraction,
                                          threads=job.threads, timing_x=job.timing_x, log=job.log)

    def export(self, model: nn.Module, sample: np.ndarray, path: Path, precision: str,
               calibration: Calibration | None) -> Artifact:
        if precision not in self.precisions:
            raise EdgekdError(f"TFLite has no precision '{precision}'", f"use one of {self.precisions}")
        if precision == "int8":
            if calibration is None:
                raise EdgekdError("TFLite int8 needs a calibration set", "pass calibration data")
            if tuple(calibration.x.shape[1:]) != tuple(sample.shape[1:]):
                raise EdgekdError(
                    f"the calibration set has sample shape {list(calibration.x.shape[1:])} but the model takes "
                    f"{list(sample.shape[1:])}", "rebuild it with `edgekd calibrate` for this target's data")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        details: dict[str, Any] = {}
        # Everything is written inside a temp dir beside ``path`` and moved in by one rename at the end, so a
        # failed conversion never leaves a half-written .tflite behind.
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}-") as tmp:
            fp32 = Path(tmp) / "fp32.tflite"
            details["converter"] = cached_fp32(model, sample, fp32)
            out = fp32
            if precision != "fp32":
                out = Path(tmp) / f"{precision}.tflite"
                details.update(quantize(fp32, out, precision, calibration, self.integer_io))
            details = {**describe(out, sample, precision), **details}
            os.replace(out, path)
        return Artifact(path, self.name, precision, [path], details)


# ------------------------------------------------------------------------------------------------ conversion
def cached_fp32(model: nn.Module, sample: np.ndarray, path: Path) -> str:
    """Write the float .tflite of ``model`` at ``path`` (converted once per model content); returns the converter."""
    key = _model_key(model, sample)
    if key in _FP32_CACHE:
        data, converter = _FP32_CACHE[key]
        Path(path).write_bytes(data)
        return converter
    converter = convert_fp32(model, sample, path)
    while len(_FP32_CACHE) >= _FP32_CACHE_SIZE:  # oldest out: a build has a student and a teacher
        _FP32_CACHE.pop(next(iter(_FP32_CACHE)))
    _FP32_CACHE[key] = (Path(path).read_bytes(), converter)
    return converter


def convert_fp32(model: nn.Module, sample: np.ndarray, path: Path) -> str:
    """Convert with a static batch of 1 (what the runner feeds); returns the converter's name and version."""
    litert_torch = _import("litert_torch", "litert-torch", "TFLite export")
    if isinstance(model, torch.jit.ScriptModule):
        raise EdgekdError(
            "a TorchScript model cannot be converted to TFLite (litert-torch needs torch.export)",
            "pass the model as a torch.export archive (.pt2) or a state_dict with its architecture")
    x = torch.from_numpy(model_input(sample[:1]))
    with quiet() as log:
        try:
            litert_torch.convert(model.eval(), (x,)).export(str(path))
        except Exception as exc:  # noqa: BLE001 - turned into one message naming the operator and layer
            raise conversion_error(model, x, exc, log()) from None
    return f"litert-torch {getattr(litert_torch, '__version__', '?')}"


def conversion_error(model: nn.Module, x: torch.Tensor, exc: BaseException, log: str) -> EdgekdError:
    """Name the operator the converter refused and, when torch.export can see it, the layer it came from."""
    text = f"{exc}\n{log}"
    ops = list(dict.fromkeys(re.findall(r"aten[._:]+(\w+)", text)))
    op = next((o for o in ops if o not in ("default", "Tensor")), None)
    layer = _layer_of(model, x, op) if op else None
    where = f" in {layer}" if layer else ""
    what = f"the operator aten.{op}{where}" if op else _first_line(exc)
    return EdgekdError(
        f"the model cannot be converted to TFLite by litert-torch: {what} ({type(exc).__name__}: "
        f"{_first_line(exc)})",
        "replace that operator/layer with a standard one (conv, linear, pooling, relu/relu6, add), or ship "
        "this model in another format (onnx, openvino)")


def _layer_of(model: nn.Module, x: torch.Tensor, op: str) -> str | None:
    try:
        with quiet():
            program = torch.export.export(model, (x,))
    except Exception:  # noqa: BLE001 - torch.export itself failed: the operator alone is all we can name
        return None
    for node in program.graph.nodes:
        if node.op == "call_function" and getattr(node.target, "__name__", "").split(".")[0] == op:
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            if stack:
                path, cls = stack[-1]
                cls = str(getattr(cls, "__name__", cls)).rsplit(".", 1)[-1]
                return f"layer '{path}' ({cls})" if path else f"the model's own forward ({cls})"
    return None


# ------------------------------------------------------------------------------------------------ quantization
def quantize(fp32: Path, out: Path, precision: str, calibration: Calibration | None,
             integer_io: bool, float_ops: Sequence[str] = (), qsvs: dict | None = None) -> dict[str, Any]:
    """Make ``precision`` from the float .tflite with ai-edge-quantizer; returns what to record about it.

    ``float_ops`` (int8 only): ops left unquantized, named by their scope (see ``op_scopes``); AEQ puts a
    DEQUANTIZE before and a QUANTIZE after each. ``qsvs``: calibration results to reuse (from ``calibrate``).
    """
    aeq = _import("ai_edge_quantizer", "ai-edge-quantizer", "TFLite quantization")
    from ai_edge_quantizer import qtyping, recipe, recipe_manager  # lazy: optional heavy (the tflite extra)
    from ai_edge_quantizer.algorithm_manager import AlgorithmName  # lazy: optional heavy (the tflite extra)
    from ai_edge_quantizer.quantizer import Quantizer  # lazy: optional heavy (the tflite extra)

    manager = recipe_manager.RecipeManager()
    details: dict[str, Any] = {}
    if precision == "fp16":
        manager.add_weight_only_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 16,
                                       algorithm_key=AlgorithmName.FLOAT_CASTING)
        name = "weight_only_wf16_afp32"
    elif precision == "dynamic_int8":
        manager.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        name = "dynamic_wi8_afp32"
    else:
        manager.load_quantization_recipe(recipe.static_wi8_ai8())
        name = "static_wi8_ai8"
        if not integer_io:  # keep float graph I/O: QUANTIZE after the input, DEQUANTIZE before the output
            for io in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
                manager.add_quantization_config(".*", io, algorithm_key=AlgorithmName.NO_QUANTIZE)
            name += "_float_io"
        for scope in float_ops:  # the last matching recipe entry wins, so these override the static one
            manager.add_quantization_config("^" + re.escape(scope) + "$", qtyping.TFLOperationName.ALL_SUPPORTED,
                                            algorithm_key=AlgorithmName.NO_QUANTIZE)
        if float_ops:
            name += f"_{len(float_ops)}_float_ops"
    details["quantizer"] = f"ai-edge-quantizer {_version('ai-edge-quantizer', aeq)} recipe {name}"
    with quiet() as log:
        try:
            if precision == "int8" and qsvs is None:
                qsvs = _calibrate(fp32, manager, calibration)
            result = Quantizer(str(fp32), manager.get_quantization_recipe()).quantize(
                qsvs, enable_progress_report=False)
            result.export_model(str(out), overwrite=True)
        except EdgekdError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise EdgekdError(
                f"ai-edge-quantizer cannot make a {precision} TFLite model: {_first_line(exc)}",
                "ship this model at another precision, or report it with this log:\n" + log()[-2000:]) from None
    if precision == "int8":
        details.update({"calibration": calibration.source, "calibration_samples": int(len(calibration.x)),
                        "calibration_statistic": "min/max over all samples", "weights": "int8 per-channel",
                        "activations": "int8"})
    return details


def calibrate(fp32: Path, calibration: Calibration) -> dict:
    """The static int8 recipe's calibration results for ``fp32``, to pass to several ``quantize`` calls."""
    _import("ai_edge_quantizer", "ai-edge-quantizer", "TFLite quantization")
    from ai_edge_quantizer import recipe, recipe_manager  # lazy: optional heavy dependency (the tflite extra)

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe.static_wi8_ai8())
    with quiet():
        return _calibrate(fp32, manager, calibration)


def op_scopes(path: Path, op_names: Sequence[str]) -> list[tuple[str, str]]:
    """(op name, scope) of the ops of ``op_names`` in the main graph, in graph order; the scope is what AEQ
    recipes match (the op's output tensor names, ';'-joined with a trailing ';')."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu  # lazy: optional heavy (the tflite extra)

    model = tfu.read_model(str(path))
    graph = model.subgraphs[0]
    found = []
    for op in graph.operators:
        name = tfu.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode)
        if name is not None and str(getattr(name, "value", name)) in op_names:
            found.append((str(getattr(name, "value", name)), tfu.get_op_scope(op, graph.tensors)))
    return found


def _calibrate(fp32: Path, manager, calibration: Calibration) -> dict:
    """Min/max of every tensor over all calibration samples, fed one at a time (the graph has batch 1)."""
    from ai_edge_quantizer import calibrator  # lazy: optional heavy dependency (the tflite extra)

    signatures = _interpreter_cls()(model_path=str(fp32)).get_signature_list()
    key = next(iter(signatures))
    input_name = signatures[key]["inputs"][0]
    x = model_input(calibration.x)
    samples = [{input_name: x[i : i + 1]} for i in range(len(x))]  # AEQ walks the list twice (count, run)
    calib = calibrator.Calibrator(str(fp32), num_threads=1, qsv_update_func=_global_min_max)
    calib.calibrate({key: samples}, manager)
    return calib.get_model_qsvs()


def _global_min_max(old: dict, new: dict) -> dict:
    out = dict(new)
    out["min"] = np.minimum(old["min"], new["min"])
    out["max"] = np.maximum(old["max"], new["max"])
    return out


# ------------------------------------------------------------------------------------------------ inspection
def describe(path: Path, sample: np.ndarray, precision: str) -> dict[str, Any]:
    """What a device needs to feed the artifact right, read back from the file itself."""
    with quiet():
        interp = _interpreter_cls()(model_path=str(path))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    shape = [int(d) for d in inp["shape"]]
    want = list(sample.shape[1:])
    if len(shape) == 4 and shape[1:] == want:
        layout = "NCHW"
    elif len(shape) == 4 and shape[1:] == [want[1], want[2], want[0]]:
        layout = "NHWC"
    else:
        layout = "NF" if len(shape) == 2 else "x".join(map(str, shape))
    details: dict[str, Any] = {
        "layout": layout,
        "input_shape": shape,
        "input_dtype": np.dtype(inp["dtype"]).name,
        "output_dtype": np.dtype(out["dtype"]).name,
    }
    for key, tensor in (("input_quantization", inp), ("output_quantization", out)):
        if np.issubdtype(tensor["dtype"], np.integer):
            scale, zero = tensor["quantization"]
            details[key] = {"scale": float(scale), "zero_point": int(zero)}
    ops = [op["op_name"] for op in interp._get_ops_details()]  # noqa: SLF001 - the only op listing the API has
    details["ops"] = sorted(set(ops) - {"DELEGATE"})
    if precision == "int8":  # full-integer: any op still computing in float would fall back on an NPU
        tensors = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
        details["float_ops"] = sorted({op["op_name"] for op in interp._get_ops_details()  # noqa: SLF001
                                       if op["op_name"] not in _QUANT_OPS | _SHAPE_OPS
                                       and any(tensors.get(i) == "float32" for i in op["outputs"])})
    return details


def _model_key(model: nn.Module, sample: np.ndarray) -> str:
    """Content hash of the model (structure + weights) and input shape: a changed model never hits the cache."""
    digest = hashlib.sha256(f"{type(model).__qualname__}|{model!r}|{sample.shape[1:]}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ accuracy-aware int8
# The ops ai-edge-quantizer's static int8 recipe quantizes that carry the compute (and the error).
TFLITE_SENSITIVE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL",
                        "CONV_3D", "EMBEDDING_LOOKUP")


def _tflite_label(index: int, op: str, scope: str) -> str:
    """A readable name for an op: its type and the module path of its first output tensor (litert-torch names
    tensors after the nn.Module stack, e.g. '...TwoConv/torch.nn.modules.conv.Conv2d_c1')."""
    tail = scope.rstrip(";").rsplit("/", 1)[-1].split(";")[0].rsplit(".", 1)[-1]
    return f"{op}#{index} {tail}"


def _tflite_ranked(score: Callable[[list[str]], aa.Scored], labels: list[str], plain: aa.Scored, fp32_acc: list[float],
                   say: Callable[[str], None]) -> tuple[list[aa.Candidate], list[dict[str, Any]]]:
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
    return [aa.Candidate(s["op"], (s["op"],)) for s in sensitivity], sensitivity


def tflite_accuracy_aware_int8(
    model,
    sample: np.ndarray,
    out: Path,
    calibration: Calibration,
    eval_sets: Sequence[aa.EvalSet],
    contract: aa.QuantContract,
    integer_io: bool = False,
    max_float_fraction: float = 0.5,
    threads: int = 1,
    timing_x: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
) -> aa.AccuracyAwareResult:
    """Full-int8 .tflite of ``model`` (ai-edge-quantizer static recipe, as ``TfliteBackend``) meeting ``contract``
    on ``eval_sets`` (the validation split), with the fewest float ops found.

    Plain int8 first; when it breaks the contract, each compute op (conv/depthwise/fully-connected...) is ranked
    by ``_tflite_ranked`` (AEQ ``no_quantize`` recipe entries matched on the op's scope) and kept float greedily,
    most sensitive first, until the contract holds. Calibration (whole-set min/max) runs once and is reused by
    every attempt. More than ``max_float_fraction`` of the compute ops in float: ``ContractError``, nothing
    written at ``out``.
    """
    say = log or (lambda _m: None)
    sets = aa.check_sets(eval_sets)
    aa.check_fraction(max_float_fraction)
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
        fp32_acc = [aa.accuracy(lg, y) for lg, (_, y) in zip(fp32_logits, sets, strict=True)]
        aa.check_fp32_floor(contract, fp32_acc)
        qsvs = calibrate(fp32, calibration)
        scope_of = {_tflite_label(i, op, scope): scope
                    for i, (op, scope) in enumerate(op_scopes(fp32, TFLITE_SENSITIVE_OPS))}
        count = [0]

        def score(float_labels: list[str]) -> aa.Scored:
            count[0] += 1
            path = work / f"q{count[0]}.tflite"
            details = quantize(fp32, path, "int8", calibration, integer_io,
                               float_ops=[scope_of[n] for n in float_labels], qsvs=qsvs)
            accs, err = aa.score_logits(load_session(str(path), 1, "int8"), sets, fp32_logits)
            return aa.Scored(accs, err, path, details)

        plain = score([])
        cap = int(np.floor(max_float_fraction * len(scope_of)))
        say(f"tflite int8 contract: plain int8 accuracy {aa.fmt_acc(plain.accuracy)} vs fp32 "
            f"{aa.fmt_acc(fp32_acc)}, allowed drop {contract.max_drop}")
        ranked, sensitivity = [], []
        if not aa.contract_met(contract, plain.accuracy, fp32_acc)[0] and cap > 0:
            ranked, sensitivity = _tflite_ranked(score, list(scope_of), plain, fp32_acc, say)
        search = aa.greedy_float_search(score, ranked, len, cap, contract, fp32_acc, plain, say, "tflite int8")
        if not search.met:
            raise aa.contract_unmet("TFLite int8", contract, search.attempts, cap, len(scope_of), "compute ops",
                                  "op(s)", fp32_acc)
        latency, cost = aa.latency_cost(timing_x, threads, (fp32, "fp32"), plain.path,
                                      search.final.path if search.members else None)
        aa.place(search.final.path, out)
    chosen = search.members
    summary = (f"tflite int8 meets the contract (drop {max(search.drops):.4f} <= {contract.max_drop}) with "
               + (f"{len(chosen)} op(s) kept float ({', '.join(chosen)})" if chosen else "no op kept float")
               + (f"; latency vs plain int8 {cost:+.1%}" if cost is not None else ""))
    say("tflite int8 contract: " + summary)
    method = ("ai-edge-quantizer static int8 (whole-set min/max) + per-op sensitivity, greedy float fallback "
              f"({search.final.details.get('quantizer', '')})")
    return aa.AccuracyAwareResult(Path(out), "tflite", method, contract, fp32_acc, plain.accuracy,
                                  search.final.accuracy, search.drops, chosen, len(scope_of) - len(chosen),
                                  len(scope_of), search.attempts, sensitivity, latency, cost, summary)


# ------------------------------------------------------------------------------------------------ helpers
@contextlib.contextmanager
def quiet() -> Iterator:
    """Silence the converters (Python warnings, progress bars, C++ logs on fds 1/2); yields a getter of the log.

    The log is kept so a failure can quote it; the environment and file descriptors are restored afterwards.
    """
    saved_env = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "0"
    sink = tempfile.TemporaryFile(mode="w+b")
    saved = []
    for fd, stream in ((1, "stdout"), (2, "stderr")):
        with contextlib.suppress(Exception):
            getattr(sys, stream).flush()
        saved.append((fd, os.dup(fd)))
        os.dup2(sink.fileno(), fd)

    def read() -> str:
        sink.flush()
        sink.seek(0)
        return sink.read().decode("utf-8", "replace")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield read
    finally:
        for stream in ("stdout", "stderr"):
            with contextlib.suppress(Exception):
                getattr(sys, stream).flush()
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        sink.close()
        if saved_env is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = saved_env


def _import(module: str, package: str, purpose: str):
    with quiet():  # importing litert-torch alone prints torch/absl warnings
        return require(module, package, "tflite", purpose)


def _interpreter_cls():
    return _import("ai_edge_litert.interpreter", "ai-edge-litert", "Running TFLite models").Interpreter


def _version(dist: str, module) -> str:
    try:
        return version(dist)
    except Exception:  # noqa: BLE001
        return getattr(module, "__version__", "?")


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]
