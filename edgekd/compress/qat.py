"""Quantization-aware training with the teacher as the signal, for when post-training int8 misses the contract.

The student is trained for a few epochs with int8 rounding simulated in its forward pass (torch's
``FakeQuantize``: straight-through gradients), under the usual KD loss from the teacher's logits, so its weights
move to values that survive rounding. The simulation mirrors what onnxruntime's QDQ quantizer will do to the
exported model: BatchNorm folded into the conv first (as onnxruntime's pre-processing does), per-output-channel
symmetric int8 weights, per-tensor uint8 (or int8) activations on every Conv/Linear input. After training the
fake-quant wrappers are removed and the float, BN-folded model goes through the same calibrated QDQ quantizer
as the PTQ path, so the artifact is an ordinary onnxruntime Q/DQ model (verified and timed by the caller).

This module is the training half; the ONNX backend (``edgekd.backends.onnx.qat_kd_onnx_int8``) exports and
quantizes its result.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
from torch.nn.utils.fusion import fuse_conv_bn_eval

from edgekd.compress.calibration import Calibration
from edgekd.compress.int8_schemes import INT8_SCHEMES
from edgekd.data import Dataset
from edgekd.data.inputs import model_input
from edgekd.distill.trainer import TrainConfig, train
from edgekd.errors import EdgekdError


@dataclass(frozen=True)
class QatConfig:
    epochs: int = 2
    lr: float = 3e-4
    seed: int = 0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"kd": 0.7, "ce": 0.3})
    temperature: float = 4.0
    scheme: str = "u8s8"  # activations/weights as in edgekd.compress.int8_schemes.INT8_SCHEMES


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d inside a Sequential into the conv (in place)."""
    model.eval()
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names, names[1:], strict=False):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn_eval(conv, bn)
                module._modules[b] = nn.Identity()
    return model


def _act_fq(signed: bool) -> nn.Module:
    if signed:
        return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=-128, quant_max=127, dtype=torch.qint8,
                            qscheme=torch.per_tensor_affine)
    return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
                        qscheme=torch.per_tensor_affine)


def _weight_fq(seven_bit: bool) -> nn.Module:
    """Symmetric per-channel int8 weights; +-64 for the 7-bit schemes (onnxruntime's ``reduce_range`` range)."""
    limit = 64 if seven_bit else 127
    return FakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-limit, quant_max=limit,
                        dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0, averaging_constant=1.0)


class FakeQuantLayer(nn.Module):
    """A Conv2d/Linear whose input activation and weight pass through int8 fake quantization.

    Observers only update in training mode, so validation passes inside the trainer don't move the ranges.
    """

    def __init__(self, layer: nn.Module, signed_activations: bool, seven_bit_weights: bool = False) -> None:
        super().__init__()
        self.layer = layer
        self.act = _act_fq(signed_activations)
        self.weight = _weight_fq(seven_bit_weights)
        self.calibrating = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fq in (self.act, self.weight):
            fq.observer_enabled[0] = int(self.training or self.calibrating)
        x = self.act(x)
        w = self.weight(self.layer.weight)
        if isinstance(self.layer, nn.Conv2d):
            conv = self.layer
            return F.conv2d(x, w, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return F.linear(x, w, self.layer.bias)


def _swap(model: nn.Module, make) -> None:
    for name, child in list(model.named_children()):
        replacement = make(child)
        if replacement is not None:
            setattr(model, name, replacement)
        else:
            _swap(child, make)


def prepare_qat(model: nn.Module, calibration_x: np.ndarray, scheme: str = "u8s8") -> nn.Module:
    """A BN-folded copy of ``model`` with every Conv2d/Linear wrapped in ``FakeQuantLayer``, its ranges
    initialised on ``calibration_x`` (so it is usable, in eval mode, before any training step)."""
    if scheme not in INT8_SCHEMES:
        raise EdgekdError(f"unknown int8 scheme '{scheme}'", f"use one of {list(INT8_SCHEMES)}")
    spec = INT8_SCHEMES[scheme]
    qat = fold_batchnorm(copy.deepcopy(model))
    _swap(qat, lambda m: FakeQuantLayer(m, spec.signed_activations, spec.reduce_range)
          if isinstance(m, (nn.Conv2d, nn.Linear)) else None)
    layers = [m for m in qat.modules() if isinstance(m, FakeQuantLayer)]
    for m in layers:
        m.calibrating = True
    with torch.no_grad():
        qat.eval()(torch.from_numpy(model_input(calibration_x)))
    for m in layers:
        m.calibrating = False
    return qat


def strip_qat(model: nn.Module) -> nn.Module:
    """The float model inside a QAT model: fake-quant wrappers replaced by their (trained) layers."""
    plain = copy.deepcopy(model)
    _swap(plain, lambda m: m.layer if isinstance(m, FakeQuantLayer) else None)
    return plain.eval()


@dataclass
class QatResult:
    model: nn.Module  # float, BN-folded, trained under fake quantization
    path: Path  # onnxruntime Q/DQ model
    val_accuracy_fp32_before: float
    val_accuracy_fp32_after: float  # the QAT model itself in float: the int8 artifact's own reference
    val_accuracy_int8_ptq: float | None
    val_accuracy_int8_qat: float
    history: list[dict[str, Any]]
    config: QatConfig

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "val_accuracy_fp32_before": self.val_accuracy_fp32_before,
                "val_accuracy_fp32_after": self.val_accuracy_fp32_after,
                "val_accuracy_int8_ptq": self.val_accuracy_int8_ptq,
                "val_accuracy_int8_qat": self.val_accuracy_int8_qat,
                "epochs": self.config.epochs, "lr": self.config.lr, "scheme": self.config.scheme,
                "history": self.history}


def qat_kd_train(student: nn.Module, teacher: nn.Module | None, data: Dataset, calibration: Calibration,
                 config: QatConfig, progress: bool = False) -> tuple[nn.Module, list[dict[str, Any]]]:
    """KD fine-tune ``student`` under int8 fake quantization: (the float, BN-folded trained model, its history)."""
    if config.epochs < 1:
        raise EdgekdError("QAT needs at least one epoch", "set epochs >= 1")
    qat = prepare_qat(student, calibration.x, config.scheme)
    trained = train(qat, data, TrainConfig(epochs=config.epochs, lr=config.lr, seed=config.seed,
                                           loss_weights=config.loss_weights if teacher is not None else {"ce": 1.0},
                                           temperature=config.temperature, label="QAT (KD)"),
                    teacher=teacher, progress=progress)
    return strip_qat(trained.model), trained.history

