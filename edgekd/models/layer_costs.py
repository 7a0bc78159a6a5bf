"""Per-layer cost terms of a network from one hooked forward pass (on the meta device: no weights, no arithmetic).

The same pass gives a student's MACs (every convolution, dense or depthwise, and every linear layer: exactly what
``models.budget.count_macs``'s FlopCounterMode counts for the student families, tested) and the features the
latency predictor fits on (``selection.predictor``). FlopCounterMode stays the count for arbitrary networks
(teachers may multiply matrices outside those layers); for sizing a grid of hundreds of students it cost 0.19 s
of the 0.25 s per configuration.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgekd.models.students import InputResize

FEATURES = ("const", "conv_macs", "depthwise_macs", "linear_macs", "layers", "activations_k", "resize_k")


def layer_features(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """Per-layer cost terms summed over the network (one forward pass with hooks): dense and depthwise conv MACs
    (int8 kernels differ a lot between them), linear MACs, the number of compute layers (a fixed cost per
    operator), output activations written (memory traffic, in thousands) and resized input elements."""
    acc = dict.fromkeys(FEATURES, 0.0)
    acc["const"] = 1.0

    def hook(module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        elems = float(out.numel())
        if isinstance(module, nn.Conv2d):
            kernel = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            depthwise = module.groups > 1 and module.groups == module.in_channels
            acc["depthwise_macs" if depthwise else "conv_macs"] += elems * kernel
        elif isinstance(module, nn.Linear):
            acc["linear_macs"] += elems * module.in_features
        elif isinstance(module, InputResize):
            acc["resize_k"] += elems / 1e3
            return
        else:
            return
        acc["layers"] += 1
        acc["activations_k"] += elems / 1e3

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear, InputResize))]
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for h in handles:
            h.remove()
    return acc


def macs_of(features: dict[str, float]) -> int:
    """MACs of one sample from the per-layer features: every convolution (dense and depthwise) and linear layer,
    exactly what ``models.budget.count_macs`` counts."""
    return int(round(features["conv_macs"] + features["depthwise_macs"] + features["linear_macs"]))
