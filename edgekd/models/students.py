"""Architecture families, kept in one registry so a state_dict can be rebuilt by name.

Students: ``mobilenetv2`` (inverted residual blocks with width/depth multipliers) for images and ``mlp`` for
flat features. Teachers: ``teacher_cnn`` and ``teacher_mlp``, the defaults trained when a user brings none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

Builder = Callable[..., nn.Module]
ARCHITECTURES: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        ARCHITECTURES[name] = fn
        return fn

    return deco


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **config) -> nn.Module:
    from edgekd.errors import EdgekdError

    if name not in ARCHITECTURES:
        raise EdgekdError(f"unknown architecture '{name}'", f"use one of: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name](tuple(input_shape), num_classes, **config)


def round_channels(value: float, multiple: int) -> int:
    """Round to the target's channel multiple (SIMD width), never below one multiple."""
    return max(multiple, int(value + multiple / 2) // multiple * multiple)


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, multiple: int) -> None:
        super().__init__()
        hidden = round_channels(cin * expand, multiple)
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            _conv_bn_relu(cin, hidden, kernel=1),
            _conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2Student(nn.Module):
    """MobileNetV2-style: stem, four stages of inverted residuals, global pool, linear classifier."""

    base_channels = (16, 24, 32, 64)

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: float = 1.0,
        depth: int = 1,
        expand: int = 4,
        channel_multiple: int = 8,
    ) -> None:
        super().__init__()
        cin, h, _ = input_shape
        stem_stride = 2 if h >= 24 else 1
        size = h // stem_stride
        stem = round_channels(16 * width, channel_multiple)
        layers: list[nn.Module] = [_conv_bn_relu(cin, stem, stride=stem_stride)]
        prev = stem
        for i, base in enumerate(self.base_channels):
            cout = round_channels(base * width, channel_multiple)
            stride = 2 if i in (1, 2) and size >= 4 else 1
            size //= stride
            for j in range(depth):
                layers.append(InvertedResidual(prev, cout, stride if j == 0 else 1, expand, channel_multiple))
                prev = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class MLP(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: Sequence[int] = (256, 128)) -> None:
        super().__init__()
        features = 1
        for d in input_shape:
            features *= d
        layers: list[nn.Module] = [nn.Flatten()]
        prev = features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            prev = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TeacherCNN(nn.Module):
    """A plain VGG-style CNN: strong on small images and cheap to train on two cores."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, widths: Sequence[int] = (64, 128, 256),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        cin = input_shape[0]
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            layers += [_conv_bn_relu(cin, w), _conv_bn_relu(w, w)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))


@register("mobilenetv2")
def _mobilenetv2(input_shape, num_classes, **config) -> nn.Module:
    return MobileNetV2Student(input_shape, num_classes, **config)


@register("mlp")
def _mlp(input_shape, num_classes, **config) -> nn.Module:
    return MLP(input_shape, num_classes, **config)


@register("teacher_cnn")
def _teacher_cnn(input_shape, num_classes, **config) -> nn.Module:
    return TeacherCNN(input_shape, num_classes, **config)


@register("teacher_mlp")
def _teacher_mlp(input_shape, num_classes, **config) -> nn.Module:
    return MLP(input_shape, num_classes, **{"hidden": (512, 256), **config})


def student_search_space(family: str, channel_multiple: int) -> list[dict]:
    """Candidate configurations of a family, in no particular order; the budget picks one."""
    if family == "mobilenetv2":
        return [
            {"width": w, "depth": d, "expand": e, "channel_multiple": channel_multiple}
            for w in (0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
            for d in (1, 2, 3)
            for e in (2, 4, 6)
        ]
    if family == "mlp":
        return [{"hidden": (h, max(16, h // 2))} for h in (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024)]
    raise ValueError(family)
