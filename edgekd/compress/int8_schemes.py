"""The int8 schemes onnxruntime's QDQ quantizer can produce, by name: what the ONNX backend quantizes with and
what quantization-aware training simulates (so a QAT model is trained on the grid it will be deployed on)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Int8Scheme:
    activations: str  # onnxruntime QuantType names
    weights: str
    reduce_range: bool = False  # 7-bit weights: no saturation in u8s8 kernels on x86 without VNNI
    symmetric: bool = False  # every zero point 0: what TensorRT's explicit quantization takes from Q/DQ

    @property
    def signed_activations(self) -> bool:
        return self.activations == "QInt8"


INT8_SCHEMES = {"u8s8": Int8Scheme("QUInt8", "QInt8"), "s8s8": Int8Scheme("QInt8", "QInt8"),
                "u8s7": Int8Scheme("QUInt8", "QInt8", True), "s8s7": Int8Scheme("QInt8", "QInt8", True),
                "s8s8-sym": Int8Scheme("QInt8", "QInt8", symmetric=True)}
