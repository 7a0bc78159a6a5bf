"""ONNX: fp32 (torch.onnx dynamo exporter), fp16 (float16 weights, float32 I/O), int8 (onnxruntime QDQ).

int8 weights are per-channel int8; the activation type (uint8 "u8s8" or int8 "s8s8") is chosen by measurement on
this host (``auto``): AVX2 without VNNI tends to run u8s8 faster, VNNI/ARM dot-product can favour s8s8. Each
candidate is first checked for what the host's integer kernels compute against what its QDQ graph says (the same
file run unoptimised, QDQ as float ops): on x86 without VNNI onnxruntime's u8s8 kernel multiplies in saturating
16-bit pairs (VPMADDUBSW) and, measured on an AVX2 EPYC, moved a 2-epoch student's logits by 0.18 on average
(0.0145 of their scale) — 2.8 % of top-1 answers flipped. A scheme that deviates is replaced by its 7-bit-weight
twin (``u8s7``/``s8s7``: onnxruntime's ``reduce_range``, its documented fix), which on the same model deviated
0.0007 on average. A target that may be such a CPU (x86 without VNNI in its ``cpu_flags``) gets a twin whatever the
build host computes. The scheme chosen is recorded in the artifact and reused by the accuracy-aware search and QAT.
With a build cache the choice is kept per (model, calibration data, host, onnxruntime version, threads): the same
model built twice on one machine gets the same scheme — and so the same int8 accuracy — instead of a fresh coin
toss of sub-millisecond timings.

Its accuracy-aware int8 search (onnxruntime's ``nodes_to_exclude``, on the generic search of
``edgekd.compress.accuracy_aware``) and its quantization-aware training's export live here too.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd import timing  # called through the module, so a test can stand a fake clock in for it
from edgekd.backends import Artifact, Calibration, require
from edgekd.compress import accuracy_aware as aa
from edgekd.compress.accuracy_aware import (
    AccuracyAwareResult,
    Candidate,
    EvalSet,
    QuantContract,
    QuantJob,
    Scored,
    greedy_float_search,
    score_logits,
)
from edgekd.compress.int8_divergence import DEFAULT_SAMPLES, Divergence, explain_onnx
from edgekd.compress.int8_schemes import INT8_SCHEMES as INT8_SCHEMES  # re-exported: the schemes this backend makes
from edgekd.compress.qat import QatConfig, QatResult, qat_kd_train
from edgekd.data import Dataset
from edgekd.data.cache import cache_entry
from edgekd.data.inputs import input_dtype_name, model_input
from edgekd.distill.trainer import accuracy
from edgekd.errors import ContractError, EdgekdError
from edgekd.io import read_json, sha256_file, write_json
from edgekd.runner import load_session
from edgekd.timing import Interleaved, host_identity


def export_onnx_fp32(model: nn.Module, sample: np.ndarray, path: Path, opset: int = 18) -> Path:
    """Export with a dynamic batch axis; fall back to the TorchScript exporter for scripted models."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    require("onnx", "onnx", "onnx", "ONNX export")
    if getattr(model, "onnx_bytes", None) is not None:  # a teacher that is an ONNX graph already (OnnxTeacher)
        path.write_bytes(model.onnx_bytes)
        return path
    model = model.eval()
    x = torch.from_numpy(np.ascontiguousarray(sample[:1]))
    errors = []
    sink = io.StringIO()
    if not isinstance(model, torch.jit.ScriptModule):
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                torch.onnx.export(
                    model, (x,), str(path), dynamo=True, external_data=False, opset_version=opset,
                    input_names=["input"], output_names=["logits"],
                    dynamic_shapes=({0: torch.export.Dim.DYNAMIC},), verbose=False,
                )
            return path
        except Exception as exc:  # noqa: BLE001 - try the other exporter, then report both
            errors.append(f"dynamo exporter: {_first_line(exc)}")
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            torch.onnx.export(
                model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        return path
    except Exception as exc:  # noqa: BLE001
        errors.append(f"torchscript exporter: {_first_line(exc)}")
    raise EdgekdError(
        f"the model cannot be exported to ONNX: {'; '.join(errors)}",
        "replace the named operator/layer with a standard one, or export the model yourself",
    )


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


class ArrayDataReader:
    """onnxruntime ``CalibrationDataReader`` over an array: one sample per call, as deployed (batch 1)."""

    def __init__(self, x: np.ndarray, input_name: str = "input") -> None:
        self.x, self.input_name, self.i = x, input_name, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        item = {self.input_name: model_input(self.x[self.i : self.i + 1])}
        self.i += 1
        return item

    def rewind(self) -> None:
        self.i = 0


# A TensorRT target's int8 ONNX is the engine's source, not what onnxruntime runs: TensorRT builds int8 layers from
# symmetric int8 Q/DQ (zero points 0) with per-channel weights (TensorRT developer guide, "Explicit Quantization").
TENSORRT_SCHEME = "s8s8-sym"
AUTO_SCHEMES = ("u8s8", "s8s8")  # timed by ``auto``; each replaced by its twin where this host's kernels deviate
SEVEN_BIT_TWIN = {"u8s8": "u8s7", "s8s8": "s8s7"}
VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}  # x86 int8 dot products without 16-bit saturation
# Mean |optimised - unoptimised| over the logits' scale above which the host's int8 kernels are not computing the
# QDQ graph: measured 0.004-0.023 for saturating u8s8/s8s8 on AVX2, <= 0.0001 for the 7-bit twins and for exact
# kernels (float accumulation order and requantisation ties differ only in the last step).
MAX_KERNEL_DEVIATION = 1e-3
# Another scheme replaces the default (the first: u8s8) only when it is clearly faster, by the median of per-round
# ratios measured interleaved: where both run alike, timing noise alone would otherwise change the artifact — and its
# accuracy — from one build of the same model to the next.
SCHEME_MIN_GAIN = 0.05


def quantize_onnx_int8(fp32: Path, out: Path, calibration: Calibration, scheme: str = "u8s8",
                       nodes_to_exclude: list[str] | None = None) -> Path:
    q = require("onnxruntime.quantization", "onnxruntime", "onnx", "ONNX int8 quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process  # lazy: optional (the onnx extra)

    spec = INT8_SCHEMES[scheme]
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prep.onnx"
        quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
        q.quantize_static(
            str(prepped), str(out), ArrayDataReader(calibration.x), quant_format=q.QuantFormat.QDQ,
            per_channel=True, activation_type=getattr(q.QuantType, spec.activations),
            weight_type=getattr(q.QuantType, spec.weights), reduce_range=spec.reduce_range,
            calibrate_method=q.CalibrationMethod.MinMax, nodes_to_exclude=nodes_to_exclude or [],
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True} if spec.symmetric else None,
        )
    return out


def device_may_saturate(device) -> bool:
    """An x86 target that does not promise VNNI (``cpu_flags``) may run u8s8 in saturating 16-bit pairs.

    Its ONNX int8 gets 7-bit weights whatever the build host computes: a VNNI build machine would not see it.
    """
    return device.arch == "x86_64" and not VNNI_FLAGS & set(device.cpu_flags)


def kernel_deviation(int8: Path, x: np.ndarray, threads: int = 1) -> float:
    """How far this host's int8 kernels move the logits from the QDQ graph's own arithmetic, over their scale.

    The optimised session fuses QDQ pairs into integer kernels; with optimisations off the same file runs
    DequantizeLinear -> float op -> QuantizeLinear, which is what the graph means. Mean absolute difference on
    ``x`` (at most 256 inputs) over max(1, max |logit|).
    """
    import onnxruntime as ort  # lazy: optional heavy dependency (the onnx extra)

    sample = model_input(x[:256])

    def logits(level) -> np.ndarray:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.graph_optimization_level = threads, level
        sess = ort.InferenceSession(str(int8), opts, providers=["CPUExecutionProvider"])
        first = sess.get_inputs()[0]
        batch = first.shape[0] if isinstance(first.shape[0], int) else 64  # a fixed batch is fed whole
        fed = sample[: max(batch, len(sample) // batch * batch)]
        return np.concatenate([sess.run(None, {first.name: fed[i : i + batch]})[0]
                               for i in range(0, len(fed), batch)])

    exact = logits(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    fused = logits(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    return float(np.abs(fused - exact).mean() / max(1.0, float(np.abs(exact).max())))


def clearly_fastest(measured: Interleaved, schemes: list[str]) -> str:
    """The first scheme, unless another's per-round time is at least SCHEME_MIN_GAIN below it (the largest gain)."""
    default = schemes[0]
    gains = {s: 1.0 - float(np.median(measured.ratios(default, s))) for s in schemes[1:]}
    best = max(gains, key=gains.get, default=default)
    return best if gains.get(best, 0.0) >= SCHEME_MIN_GAIN else default


class OnnxBackend:
    name = "onnx"
    precisions = ("fp32", "fp16", "int8")

    def __init__(self, int8_scheme: str = "auto", threads: int = 1, cache_dir: Path | None = None,
                 seven_bit_only: bool = False) -> None:
        if int8_scheme != "auto" and int8_scheme not in INT8_SCHEMES:
            raise EdgekdError(f"unknown ONNX int8 scheme '{int8_scheme}'", f"use auto or one of {list(INT8_SCHEMES)}")
        self.int8_scheme = int8_scheme
        self.threads = threads
        self.cache_dir = cache_dir  # the build's cache (stages.compress.backend_for), where the scheme is kept
        self.seven_bit_only = seven_bit_only  # ``auto`` picks among the 7-bit twins only (device_may_saturate)

    @classmethod
    def from_target(cls, target) -> OnnxBackend:
        if target.runtime.delegate == "tensorrt":
            return cls(int8_scheme=TENSORRT_SCHEME, threads=target.runtime.usable_threads)
        return cls(threads=target.runtime.usable_threads, seven_bit_only=device_may_saturate(target.device))

    def auto_schemes(self) -> list[str]:
        return [SEVEN_BIT_TWIN[s] for s in AUTO_SCHEMES] if self.seven_bit_only else list(AUTO_SCHEMES)

    def list_operators(self, path: Path) -> dict[str, int]:
        import onnx  # lazy: optional heavy dependency (the onnx extra)

        counts: dict[str, int] = {}
        for node in onnx.load(str(path), load_external_data=False).graph.node:
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
            counts[op] = counts.get(op, 0) + 1
        return counts

    def qat_int8(self, job: QuantJob, teacher: nn.Module | None, data: Dataset, epochs: int, seed: int,
                 progress: bool) -> tuple[nn.Module, dict[str, Any]]:
        """Quantization-aware KD fine-tune, then onnxruntime QDQ of the new model: (new fp32 model, details).

        The QAT model is a new model: the contract is judged against it on the validation split."""
        scheme = job.plain.details.get("scheme", "u8s8")
        qat = qat_kd_onnx_int8(job.model, teacher, data, job.calibration, job.out,
                               QatConfig(epochs=epochs, seed=seed, scheme=scheme), progress=progress)
        drop = qat.val_accuracy_fp32_after - _int8_accuracy(job.out, *job.val)
        if drop > job.contract.max_drop + 1e-12:
            job.out.unlink(missing_ok=True)
            raise ContractError(
                f"no int8 onnx model meets max_quantization_drop={job.contract.max_drop}: after QAT the int8 model "
                f"loses {drop:.4f} against the QAT model on the validation split; nothing was shipped",
                "relax the budget or allow fp16/fp32 in the target")
        return qat.model, qat.to_dict()

    def accuracy_aware_int8(self, job: QuantJob) -> AccuracyAwareResult:
        return onnx_accuracy_aware_int8(job.fp32, job.out, job.calibration, [job.val], job.contract,
                                        scheme=job.plain.details.get("scheme", "u8s8"),
                                        max_float_fraction=job.max_float_fraction, threads=job.threads,
                                        timing_x=job.timing_x, log=job.log)

    def export(self, model: nn.Module, sample: np.ndarray, path: Path, precision: str,
               calibration: Calibration | None) -> Artifact:
        details: dict = {"layout": "NCHW" if sample.ndim == 4 else "NF", "input_dtype": input_dtype_name(sample),
                         "opset": 18}
        if precision == "fp32":
            export_onnx_fp32(model, sample, path)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                fp32 = export_onnx_fp32(model, sample, Path(tmp) / "fp32.onnx")
                if precision == "fp16":
                    self._to_fp16(fp32, path)
                elif precision == "int8":
                    if calibration is None:
                        raise EdgekdError("ONNX int8 needs a calibration set", "pass calibration data")
                    scheme, timings, how, deviation = self._quantize_best_scheme(fp32, path, calibration)
                    details.update({"scheme": scheme, "scheme_p50_ms": timings, "scheme_choice": how,
                                    "reduce_range": INT8_SCHEMES[scheme].reduce_range,
                                    "seven_bit_for_device": self.seven_bit_only and self.int8_scheme == "auto",
                                    "kernel_deviation": deviation,
                                    "quant_format": "QDQ",
                                    "per_channel": True, "calibration": calibration.source})
                else:
                    raise EdgekdError(f"ONNX has no precision '{precision}'", f"use one of {self.precisions}")
        return Artifact(path, self.name, precision, [path], details)

    def _quantize_best_scheme(self, fp32: Path, out: Path, calibration: Calibration) -> tuple[str, dict, str, dict]:
        """Quantize with the scheme onnxruntime runs fastest and faithfully on this host.

        Returns (scheme, p50 ms per candidate, how chosen, kernel deviation per scheme tried). Which is faster
        depends on the CPU (AVX2 without VNNI favours uint8 activations; VNNI/ARM dot-product can favour int8), so
        it is measured, not assumed — once per model and host when a cache is given. Parity is checked by the
        caller on the winner.
        """
        if self.int8_scheme != "auto":
            quantize_onnx_int8(fp32, out, calibration, self.int8_scheme)
            return self.int8_scheme, {}, "fixed", {self.int8_scheme: kernel_deviation(out, calibration.x,
                                                                                      self.threads)}
        memo = SchemeMemo(self.cache_dir, fp32, calibration, self.threads, self.auto_schemes())
        remembered = memo.recall()
        if remembered is not None:
            quantize_onnx_int8(fp32, out, calibration, remembered["scheme"])
            return (remembered["scheme"], remembered["p50_ms"], f"cached: measured {remembered['measured_at']}",
                    remembered["kernel_deviation"])
        with tempfile.TemporaryDirectory() as tmp:
            paths, deviation = self._faithful_candidates(fp32, Path(tmp), calibration)
            measured = timing.measure_interleaved({s: (p, "int8") for s, p in paths.items()}, calibration.x,
                                                  self.threads, rounds=3)
            best = clearly_fastest(measured, list(paths))
            shutil.move(str(paths[best]), str(out))  # across filesystems, unlike os.replace
        timings = measured.medians()
        memo.keep(best, timings, deviation)
        return best, timings, "measured", deviation

    def _faithful_candidates(self, fp32: Path, folder: Path, calibration: Calibration
                             ) -> tuple[dict[str, Path], dict[str, float]]:
        """Each ``auto`` scheme quantized, swapped for its 7-bit twin where this host's kernels deviate from it."""
        paths, deviation = {}, {}
        for scheme in self.auto_schemes():
            path = quantize_onnx_int8(fp32, folder / f"{scheme}.onnx", calibration, scheme)
            deviation[scheme] = kernel_deviation(path, calibration.x, self.threads)
            if deviation[scheme] > MAX_KERNEL_DEVIATION and scheme in SEVEN_BIT_TWIN:
                scheme = SEVEN_BIT_TWIN[scheme]
                path = quantize_onnx_int8(fp32, folder / f"{scheme}.onnx", calibration, scheme)
                deviation[scheme] = kernel_deviation(path, calibration.x, self.threads)
            paths[scheme] = path
        return paths, deviation

    @staticmethod
    def _to_fp16(fp32: Path, out: Path) -> None:
        import onnx  # lazy: optional heavy dependency (the onnx extra)
        from onnxruntime.transformers.float16 import convert_float_to_float16  # lazy: optional (the onnx extra)

        model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
        onnx.save(model, str(out))


class SchemeMemo:
    """The int8 scheme chosen for one model on one host, kept under ``<cache>/onnx_int8_scheme/``.

    Keyed by the fp32 model's and the calibration data's sha256, this machine (architecture, CPU, cores, host
    name), the onnxruntime version, the thread count and the schemes tried. An unreadable or foreign entry is
    measured again, never fatal; without a cache (``--no-cache``) every build measures.
    """

    def __init__(self, cache_dir: Path | None, fp32: Path, calibration: Calibration, threads: int,
                 schemes: list[str]) -> None:
        self.schemes = schemes
        self.root, self.path = cache_dir, None
        if cache_dir is not None:
            self.path = Path(cache_dir) / "onnx_int8_scheme" / f"{self._key(fp32, calibration, threads)}.json"

    def _key(self, fp32: Path, calibration: Calibration, threads: int) -> str:
        import onnxruntime  # lazy: optional heavy dependency (the onnx extra)

        calib = hashlib.sha256(model_input(calibration.x).tobytes()).hexdigest()
        parts = [sha256_file(fp32), calib, host_identity(), onnxruntime.__version__, threads, self.schemes,
                 "kernel-checked"]  # entries from before the kernel check chose among unchecked schemes
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]

    def recall(self) -> dict | None:
        """The kept choice, or None: no cache, no entry or a damaged one. A cache folder or entry that other users
        can write is refused (EdgekdError), as every cache is (``edgekd.data.cache.cache_entry``)."""
        if self.path is None or not self._checked().is_file():
            return None
        try:
            entry = read_json(self.path, "ONNX int8 scheme memo", "")
            timings, deviation = entry["p50_ms"], entry["kernel_deviation"]
            ok = (entry["scheme"] in INT8_SCHEMES and isinstance(entry["measured_at"], str)
                  and all(isinstance(d, dict) and set(d) <= set(INT8_SCHEMES)
                          and all(isinstance(v, int | float) for v in d.values()) for d in (timings, deviation)))
        except (EdgekdError, KeyError, TypeError):
            return None
        return entry if ok else None

    def _checked(self) -> Path:
        return cache_entry(Path(self.root), "onnx_int8_scheme", self.path.name, what="ONNX int8 scheme memo")

    def keep(self, scheme: str, p50_ms: dict, kernel_deviation: dict) -> None:
        """Best effort: a cache that cannot be written leaves the build measuring next time."""
        if self.path is None:
            return
        self._checked()
        with contextlib.suppress(OSError):
            write_json(self.path, {"scheme": scheme, "p50_ms": p50_ms, "kernel_deviation": kernel_deviation,
                                   "schemes": self.schemes,
                                   "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})


# --------------------------------------------------------------------------------------------- accuracy-aware int8
# Ops whose inputs onnxruntime's QDQ quantizer quantizes and that carry most of the compute (and the error).
SENSITIVE_OP_TYPES = ("Conv", "Gemm", "MatMul", "ConvTranspose")
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
    import onnx  # lazy: optional heavy dependency (the onnx extra)
    from onnxruntime.quantization.shape_inference import quant_pre_process  # lazy: optional (the onnx extra)

    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prep.onnx"
        quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
        return onnx.load(str(prepped)).graph


def onnx_float_units(fp32: Path, int8: Path) -> tuple[list[FloatUnit], list[str]]:
    """The activation tensors plain int8 quantizes, each with the nodes that must stay float to keep it float;
    and all compute nodes (Conv/Gemm/MatMul) of the model."""
    import onnx  # lazy: optional heavy dependency (the onnx extra)

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
        self.fp32, self.calibration, self.eval_sets, self.scheme, self.work = fp32, calibration, eval_sets, scheme, work
        session = load_session(str(fp32), 1, "fp32")
        self.fp32_logits = [session.run_batched(x) for x, _ in eval_sets]
        self.fp32_accuracy = [aa.accuracy(lg, y) for lg, (_, y) in zip(self.fp32_logits, eval_sets, strict=True)]
        self.count = 0

    def score(self, exclude: Sequence[str]) -> Scored:
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
    sets = aa.check_sets(eval_sets)
    aa.check_fraction(max_float_fraction)
    with tempfile.TemporaryDirectory() as tmp:
        ev = _OnnxEvaluator(Path(fp32), calibration, sets, scheme, Path(tmp))
        fp32_acc = ev.fp32_accuracy
        aa.check_fp32_floor(contract, fp32_acc)
        plain = ev.score([])
        units, compute = onnx_float_units(Path(fp32), plain.path)
        cap = int(np.floor(max_float_fraction * len(compute)))
        say(f"int8 contract: plain int8 accuracy {aa.fmt_acc(plain.accuracy)} vs fp32 {aa.fmt_acc(fp32_acc)}, "
            f"allowed drop {contract.max_drop}")
        ranked, sensitivity, divergence = [], [], None
        if not aa.contract_met(contract, plain.accuracy, fp32_acc)[0]:
            divergence = _explain_plain(Path(fp32), plain.path, calibration, say)
            if cap > 0:
                ranked, sensitivity = _onnx_ranked(ev, units, plain, say)
        search = greedy_float_search(lambda members: ev.score(members), ranked,
                                     lambda members: sum(1 for n in members if n in compute), cap, contract,
                                     fp32_acc, plain, say, "int8")
        if not search.met:
            raise _with_divergence(aa.contract_unmet("int8", contract, search.attempts, cap, len(compute),
                                                   "compute layers", "node(s)", fp32_acc), divergence)
        latency, cost = aa.latency_cost(timing_x, threads, (Path(fp32), "fp32"), plain.path,
                                      search.final.path if search.members else None)
        aa.place(search.final.path, out)
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


# --------------------------------------------------------------------------------------------- QAT
def qat_kd_onnx_int8(student: nn.Module, teacher: nn.Module | None, data: Dataset, calibration: Calibration,
                     out: Path, config: QatConfig = QatConfig(), progress: bool = False,
                     compare_ptq: bool = True) -> QatResult:
    """KD fine-tune ``student`` under int8 fake quantization (``edgekd.compress.qat``), then write the onnxruntime
    QDQ model of the result to ``out``; with ``compare_ptq`` the plain int8 of ``student`` is scored beside it."""
    fp32_acc = accuracy(student, data.x_val, data.y_val)
    model, history = qat_kd_train(student, teacher, data, calibration, config, progress)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ptq_acc = None
    with tempfile.TemporaryDirectory() as tmp:
        if compare_ptq:
            fp32 = export_onnx_fp32(copy.deepcopy(student).eval(), data.x_val[:1], Path(tmp) / "ptq_fp32.onnx")
            ptq = quantize_onnx_int8(fp32, Path(tmp) / "ptq.onnx", calibration, config.scheme)
            ptq_acc = _int8_accuracy(ptq, data.x_val, data.y_val)
        fp32 = export_onnx_fp32(model, data.x_val[:1], Path(tmp) / "qat_fp32.onnx")
        quantize_onnx_int8(fp32, out, calibration, config.scheme)
    qat_acc = _int8_accuracy(out, data.x_val, data.y_val)
    return QatResult(model, out, fp32_acc, accuracy(model, data.x_val, data.y_val), ptq_acc, qat_acc, history, config)


def _int8_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    return float((load_session(str(path), 1, "int8").run_batched(x).argmax(1) == y).mean())
