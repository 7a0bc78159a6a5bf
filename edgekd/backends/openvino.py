"""OpenVINO IR: fp32 and fp16 (``ov.save_model``), int8 through ``nncf.quantize`` on the calibration set.

The IR is converted from the ONNX export (robust for any module the ONNX path handles); NNCF then quantizes
the OpenVINO model itself, which avoids NNCF's torch backend and its C++ extension build.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from edgekd.backends import Artifact, Calibration, require
from edgekd.backends.onnx import export_onnx_fp32
from edgekd.data.inputs import input_dtype_name
from edgekd.errors import EdgekdError


class OpenVinoBackend:
    name = "openvino"
    precisions = ("fp32", "fp16", "int8")

    @classmethod
    def from_target(cls, target) -> OpenVinoBackend:
        return cls()

    def list_operators(self, path: Path) -> dict[str, int]:
        import openvino as ov

        counts: dict[str, int] = {}
        for op in ov.Core().read_model(str(path)).get_ordered_ops():
            name = op.get_type_name()
            if name not in ("Parameter", "Result", "Constant"):
                counts[name] = counts.get(name, 0) + 1
        return counts

    def accuracy_aware_int8(self, job):
        from edgekd.compress.accuracy_aware import openvino_accuracy_aware_int8

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
