"""Student family ``resnet``: a narrow ResNet of dense 3x3 convolutions (the default teacher's blocks, scaled down).

Why a second image family: MobileNetV2's depthwise convolutions make a small model for inference, but on a CPU they
train at a tenth of the throughput per MAC of dense convolutions (benchmarks/results/train_throughput.json: the
10.7 M-MAC MobileNetV2 trains at ~56 GFLOP/s where the dense 66 M-MAC teacher reaches ~400). Where the build's
time goes to training the student (twice with ``--baseline``), a dense student of the same MACs trains in a
fraction of the time, so within the same minutes it can be larger or trained longer. Which family wins on accuracy
for the time is a measurement (benchmarks/build_time.py); a target picks one with ``student_budget.family``.
Like MobileNetV2 it may run at a lower ``resolution`` than the data (an ``InputResize`` front), which the latency
search tries.
"""

from __future__ import annotations

import torch
from torch import nn

from edgekd.models.students import register_family, resize_front, round_channels
from edgekd.models.teacher_resnet import TeacherResNet

BASE_WIDTHS = (16, 32, 64)


class ResNetStudent(TeacherResNet):
    """Stem and first stage at full resolution (or ``resolution``), then two stride-2 stages; ``depth`` blocks per
    stage. The state_dict is the teacher class's: a resize front has no parameters."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, depth: int = 1,
                 channel_multiple: int = 8, resolution: int | None = None) -> None:
        resize, side = resize_front(input_shape, resolution)
        widths = tuple(round_channels(w * width, channel_multiple) for w in BASE_WIDTHS)
        super().__init__((input_shape[0], side, side), num_classes, widths=widths, blocks=(depth,) * len(widths),
                         dropout=0.0)
        self.resize = resize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.resize(x))


def search_space(channel_multiple: int) -> list[dict]:
    return [
        {"width": w, "depth": d, "channel_multiple": channel_multiple}
        for w in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
        for d in (1, 2)
    ]


# mac_weight: a dense MAC here bought half the accuracy of a MobileNetV2 MAC (benchmarks/capacity_proxy.py)
@register_family("resnet", inputs="image", search_space=search_space, resizable=True, mac_weight=0.5)
def _resnet_student(input_shape, num_classes, **config) -> nn.Module:
    return ResNetStudent(input_shape, num_classes, **config)
