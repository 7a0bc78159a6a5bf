"""Student family ``mobilenetv2``: inverted residual blocks with width, depth and expansion multipliers, and an
optional input resolution below the data's (an ``InputResize`` front), which latency-driven selection searches."""

from __future__ import annotations

import torch
from torch import nn

from edgekd.models.students import conv_bn_relu, register_family, resize_front, round_channels


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, multiple: int) -> None:
        super().__init__()
        hidden = round_channels(cin * expand, multiple)
        self.use_residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn_relu(cin, hidden, kernel=1),
            conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
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
        resolution: int | None = None,
    ) -> None:
        super().__init__()
        cin = input_shape[0]
        # from the data's size: a lower resolution then means less compute
        stem_stride = 2 if input_shape[1] >= 24 else 1
        self.resize, h = resize_front(input_shape, resolution)
        size = h // stem_stride
        stem = round_channels(16 * width, channel_multiple)
        layers: list[nn.Module] = [conv_bn_relu(cin, stem, stride=stem_stride)]
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
        return self.classifier(torch.flatten(self.pool(self.features(self.resize(x))), 1))


def search_space(channel_multiple: int) -> list[dict]:
    return [
        {"width": w, "depth": d, "expand": e, "channel_multiple": channel_multiple}
        for w in (0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
        for d in (1, 2, 3)
        for e in (2, 4, 6)
    ]


@register_family("mobilenetv2", inputs="image", search_space=search_space, resizable=True)
def _mobilenetv2(input_shape, num_classes, **config) -> nn.Module:
    return MobileNetV2Student(input_shape, num_classes, **config)
