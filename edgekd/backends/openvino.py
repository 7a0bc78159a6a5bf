"""OpenVINO IR: fp32 and fp16 (``ov.save_model``), int8 through ``nncf.quantize`` on the calibration set.

The IR is converted from the ONNX export (robust for any module the ONNX path handles); NNCF then quantizes
the OpenVINO model itself, which avoids NNCF's torch backend and its C++ extension build. Its accuracy-aware
int8 is NNCF's own ``quantize_with_accuracy_control`` with ``max_drop`` absolute.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import nn

from edgekd.backends import Artifact, Calibration, require
from edgekd.backends.onnx import export_onnx_fp32
from edgekd.compress import accuracy_aware as aa
from edgekd.compress.accuracy_aware import AccuracyAwareResult, Attempt, EvalSet, QuantContract, QuantJob
from edgekd.data.inputs import input_dtype_name
from edgekd.errors import ContractError, EdgekdError
from edgekd.targets import TargetProfile
from edgekd.timing import measure_interleaved


class OpenVinoBackend:
    name = "openvino"
    precisions = ("fp32", "fp16", "int8")

    @classmethod
    def from_target(cls, target: TargetProfile) -> OpenVinoBackend:
        return cls()

    def list_operators(self, path: Path) -> dict[str, int]:
        ov = require("openvino", "openvino", "openvino", "reading OpenVINO IR")
        counts: dict[str, int] = {}
        for op in ov.Core().read_model(str(path)).get_ordered_ops():
            name = op.get_type_name()
            if name not in ("Parameter", "Result", "Constant"):
                counts[name] = counts.get(name, 0) + 1
        return counts

    def accuracy_aware_int8(self, job: QuantJob) -> AccuracyAwareResult:
        return openvino_accuracy_aware_int8(job.fp32, job.out, job.calibration, job.val, job.contract,
                                            threads=job.threads, timing_x=job.timing_x, log=job.log)

    def export(self, model: nn.Module, sample: np.ndarray, path: Path, precision: str,
               calibration: Calibration | None) -> Artifact:
        ov = require("openvino", "openvino", "openvino", "OpenVINO IR export")
        if precision not in self.precisions:
            raise EdgekdError(f"OpenVINO has no precision '{precision}'", f"use one of {self.precisions}")
        details: dict = {"layout": "NCHW" if sample.ndim == 4 else "NF", "input_dtype": input_dtype_name(sample)}
        with tempfile.TemporaryDirectory() as tmp:
            ov_model = ov.convert_model(str(export_onnx_fp32(model, sample, Path(tmp) / "model.onnx")))
        if precision == "int8":
            if calibration is None:
                raise EdgekdError("OpenVINO int8 needs a calibration set", "pass calibration data")
            ov_model = quantize_ov_int8(ov_model, calibration)
            details.update({"quantizer": "nncf.quantize", "calibration": calibration.source})
        ov.save_model(ov_model, str(path), compress_to_fp16=precision == "fp16")
        return Artifact(path, self.name, precision, [path, path.with_suffix(".bin")], details)


def quantize_ov_int8(ov_model, calibration: Calibration, ignored_names: list[str] | None = None):
    nncf = require("nncf", "nncf", "openvino", "OpenVINO int8 quantization")
    logging.getLogger("nncf").setLevel(logging.ERROR)
    items = [calibration.x[i : i + 1] for i in range(len(calibration.x))]
    kwargs = {}
    if ignored_names:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=ignored_names)
    return nncf.quantize(ov_model, nncf.Dataset(items), subset_size=len(items), **kwargs)


# --------------------------------------------------------------------------------------------- accuracy-aware int8
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
    nncf = require("nncf", "nncf", "openvino", "OpenVINO int8 quantization")
    ov = require("openvino", "openvino", "openvino", "OpenVINO int8 quantization")

    say = log or (lambda _m: None)
    (x_val, y_val), = aa.check_sets([eval_set])
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
    aa.check_fp32_floor(contract, [fp32_acc])
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
    ok, drops = aa.contract_met(contract, [acc], [fp32_acc])
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
            latency = measure_interleaved({"fp32": (fp32_xml, "fp32"), "plain_int8": (plain_xml, "int8"),
                                           "shipped": (out_xml, "int8")}, timing_x, threads).medians()
            cost = latency["shipped"] / latency["plain_int8"] - 1.0
    summary = (f"{method}: accuracy {acc:.4f} vs fp32 {fp32_acc:.4f} (plain int8 {plain_acc:.4f}); "
               f"{len(kept_float)} op(s) kept float" + (f": {', '.join(kept_float)}" if kept_float else "")
               + (f"; latency vs plain int8 {cost:+.1%}" if cost is not None else ""))
    say("openvino int8 contract: " + summary)
    return AccuracyAwareResult(out_xml, "openvino", method, contract, [fp32_acc], [plain_acc], [acc], drops,
                               kept_float, len(q_ops), len(q_ops) + len(float_ops), attempts, [], latency, cost,
                               summary)
