"""Student family ``mlp`` (flat features, e.g. tabular data), and ``teacher_mlp``, its default teacher."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgekd.models.students import register, register_family


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


def search_space(channel_multiple: int) -> list[dict]:
    return [{"hidden": (h, max(16, h // 2))} for h in (32, 64, 96, 128, 192, 256, 384, 512, 768, 1024)]


@register_family("mlp", inputs="any", search_space=search_space)
def _mlp(input_shape, num_classes, **config) -> nn.Module:
    return MLP(input_shape, num_classes, **config)


@register("teacher_mlp")
def _teacher_mlp(input_shape, num_classes, **config) -> nn.Module:
    return MLP(input_shape, num_classes, **{"hidden": (512, 256), **config})
