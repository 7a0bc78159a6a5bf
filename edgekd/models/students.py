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

from torch import nn

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

    def accepts(self, input_shape: Sequence[int]) -> bool:
        kind = "image" if len(input_shape) == 3 else "flat"
        return self.inputs in (kind, "any")


STUDENT_FAMILIES: dict[str, StudentFamily] = {}


def register_family(name: str, inputs: Literal["image", "flat", "any"], search_space: Callable[[int], list[dict]],
                    ) -> Callable[[Builder], Builder]:
    """Register a student family: its builder (also an architecture by the same name) and its search space."""
    def deco(fn: Builder) -> Builder:
        register(name)(fn)
        STUDENT_FAMILIES[name] = StudentFamily(name, inputs, search_space)
        return fn

    return deco


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **config) -> nn.Module:
    from edgekd.errors import EdgekdError

    if name not in ARCHITECTURES:
        raise EdgekdError(f"unknown architecture '{name}'", f"use one of: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name](tuple(input_shape), num_classes, **config)


def student_family(name: str, input_shape: Sequence[int]) -> StudentFamily:
    """The named family (``auto``: the first made for this kind of input, else one that takes any) for the data."""
    from edgekd.errors import EdgekdError

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


