"""The students worth considering: family x width x depth x input resolution (images), or the MLP widths (flat
data), each with its size (params, MACs) and the per-layer features the latency predictor fits on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.models.budget import count_macs, count_params
from edgekd.models.students import build_model, student_family
from edgekd.targets import StudentBudget

# Families that take a ``resolution`` (an InputResize front): the input resolution is searched for them.
RESIZABLE = {"mobilenetv2"}
# Resolutions tried, as fractions of the data's side; below MIN_SIDE pixels a CNN has nothing left to see.
RESOLUTION_FRACTIONS = (1.0, 0.75, 0.5)
MIN_SIDE = 8
# Width x depth for the latency search: expand fixed at the family default (4) keeps the grid small enough to count
# every candidate's MACs in seconds; width and resolution are the big latency levers, depth the per-layer one.
WIDTHS = (0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
DEPTHS = (1, 2, 3)


def candidate_name(family: str, config: dict[str, Any]) -> str:
    """``mobilenetv2(depth=1, expand=4, width=0.5)``: how reports and logs name a configuration."""
    parts = [f"{k}={v}" for k, v in sorted(config.items()) if k != "channel_multiple"]
    return f"{family}({', '.join(parts)})"


@dataclass
class Candidate:
    family: str
    config: dict[str, Any]
    params: int
    macs: int
    features: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return candidate_name(self.family, self.config)

    def key(self, input_shape: tuple[int, ...], num_classes: int) -> str:
        """Stable identity of the network (cache key part): family, config, input shape, classes."""
        blob = json.dumps([self.family, self.config, list(input_shape), num_classes], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return build_model(self.family, input_shape, num_classes, **self.config)


def _configs(family: str, input_shape: tuple[int, ...], multiple: int) -> list[dict[str, Any]]:
    if family not in RESIZABLE:
        return student_family(family, input_shape).search_space(multiple)
    side = min(input_shape[1], input_shape[2])
    sides = sorted({max(MIN_SIDE, int(round(side * f))) for f in RESOLUTION_FRACTIONS if side * f >= MIN_SIDE}
                   | {side}, reverse=True)
    return [{"width": w, "depth": d, "expand": 4, "channel_multiple": multiple,
             **({"resolution": r} if r != side else {})}
            for r in sides for w in WIDTHS for d in DEPTHS]


def enumerate_candidates(input_shape: tuple[int, ...], num_classes: int, budget: StudentBudget,
                         max_macs: int | None = None) -> tuple[list[Candidate], int]:
    """(candidates inside the params/MACs limits, how many configurations were enumerated)."""
    family = student_family(budget.family, input_shape).name
    configs = _configs(family, input_shape, budget.channel_multiple)
    out = []
    for config in configs:
        with torch.device("meta"):  # sizes only: no weights allocated (see models.budget.size_of)
            model = build_model(family, input_shape, num_classes, **config)
            params = count_params(model)
            if params > budget.max_params:
                continue
            macs = count_macs(model, input_shape)
            if max_macs is not None and macs > max_macs:
                continue
            out.append(Candidate(family, config, params, macs, layer_features(model, input_shape)))
    return out, len(configs)


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
        elif type(module).__name__ == "InputResize":
            acc["resize_k"] += elems / 1e3
            return
        else:
            return
        acc["layers"] += 1
        acc["activations_k"] += elems / 1e3

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) or type(m).__name__ == "InputResize"]
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for h in handles:
            h.remove()
    return acc


def feature_matrix(candidates: list[Candidate]) -> np.ndarray:
    return np.asarray([[c.features[f] for f in FEATURES] for c in candidates], dtype=np.float64)
