"""Architecture registries: every network edgekd builds by name, and the student families with their search spaces.

A family lives in one file (``mobilenetv2.py``, ``mlp.py``...) that defines its network and registers it with
``@register_family``, carrying the configurations the budget fit searches over; teachers and other architectures
register with ``@register`` so a state_dict can be rebuilt by name. Adding a student family = one file + its import
in ``edgekd/models/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import EdgekdError

Builder = Callable[..., nn.Module]
ARCHITECTURES: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        ARCHITECTURES[name] = fn
        return fn

    return deco


@dataclass(frozen=True)
class StudentFamily:
    """A student family: how to build one, what inputs it takes, and the configurations worth trying."""

    name: str
    inputs: Literal["image", "flat", "any"]
    search_space: Callable[[int], list[dict]]  # channel_multiple -> candidate configurations
    resizable: bool = False  # takes ``resolution`` (an InputResize front): the latency search tries lower ones
    mac_weight: float = 1.0  # accuracy per MAC relative to mobilenetv2's, measured (models.budget.capacity_score)

    def accepts(self, input_shape: Sequence[int]) -> bool:
        kind = "image" if len(input_shape) == 3 else "flat"
        return self.inputs in (kind, "any")


STUDENT_FAMILIES: dict[str, StudentFamily] = {}


def register_family(name: str, inputs: Literal["image", "flat", "any"], search_space: Callable[[int], list[dict]],
                    resizable: bool = False, mac_weight: float = 1.0) -> Callable[[Builder], Builder]:
    """Register a student family: its builder (also an architecture by the same name) and its search space."""
    def deco(fn: Builder) -> Builder:
        register(name)(fn)
        STUDENT_FAMILIES[name] = StudentFamily(name, inputs, search_space, resizable, mac_weight)
        return fn

    return deco


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **config) -> nn.Module:
    if name not in ARCHITECTURES:
        raise EdgekdError(f"unknown architecture '{name}'", f"use one of: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name](tuple(input_shape), num_classes, **config)


def student_family(name: str, input_shape: Sequence[int]) -> StudentFamily:
    """The named family (``auto``: the first made for this kind of input, else one that takes any) for the data."""
    if name == "auto":
        fits = sorted((f for f in STUDENT_FAMILIES.values() if f.accepts(input_shape)), key=lambda f: f.inputs == "any")
        if not fits:
            raise EdgekdError(f"no student family takes inputs of shape {tuple(input_shape)}",
                              f"families: {', '.join(STUDENT_FAMILIES)}")
        return fits[0]
    if name not in STUDENT_FAMILIES:
        raise EdgekdError(f"unknown student family '{name}'",
                          f"set student_budget.family to auto or one of: {', '.join(STUDENT_FAMILIES)}")
    family = STUDENT_FAMILIES[name]
    if not family.accepts(input_shape):
        raise EdgekdError(f"student family '{name}' takes {family.inputs} inputs, the data has shape "
                          f"{tuple(input_shape)}", "set student_budget.family to 'auto' or a family for this data")
    return family


def round_channels(value: float, multiple: int) -> int:
    """Round to the target's channel multiple (SIMD width), never below one multiple."""
    return max(multiple, int(value + multiple / 2) // multiple * multiple)


def conv_bn_relu(cin: int, cout: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class PooledClassifier(nn.Module):
    """A convolutional body (``features``), then global average pool, dropout and a linear classifier: the head of
    both default teachers (and the ResNet student). The attribute names are the state_dict keys and feature-tap
    paths that saved teachers and ``--feature-path`` options name, so they stay as they are."""

    def __init__(self, features: nn.Sequential, width: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


class InputResize(nn.Module):
    """Bilinear resize of the input to ``size`` x ``size`` inside the model: the student runs at a lower resolution
    than the data (a large latency lever), while the artifact still takes the data's shape, so the device's
    pre-processing, eval.npz and the teacher stay the same. Exports as ONNX Resize / TFLite RESIZE_BILINEAR."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = int(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


def resize_front(input_shape: Sequence[int], resolution: int | None) -> tuple[nn.Module, int]:
    """(the module a resizable family puts first, the side its first layer sees): an ``InputResize`` when
    ``resolution`` differs from the data's size, else an identity (no parameters either way, so state_dicts of
    both match)."""
    h, w = int(input_shape[1]), int(input_shape[2])
    if resolution is None or (resolution == h and resolution == w):
        return nn.Identity(), h
    if not 4 <= resolution <= max(h, w):
        raise ValueError(f"resolution {resolution} must be within 4..{max(h, w)} (the data's size)")
    return InputResize(resolution), int(resolution)
