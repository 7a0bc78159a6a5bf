"""``teacher_resnet``: the default teacher for images outside 28x28-32x32 when a user brings none — a small ResNet.

Residual blocks with a stride-2 downsample in each stage (widths 32/64/128, blocks 1/2/2) cost 66 M MACs at 28x28
against the VGG-style ``teacher_cnn``'s 116 M, and being dense 3x3 convolutions they use the CPU's matrix units
(oneDNN, AMX/AVX-512) well. It was the default for all images until measured on Fashion-MNIST: 0.9339-0.9354 on
the test split after 8 epochs where ``teacher_cnn`` reaches 0.9395 after 6, and the rpi4 student sized from it half
as large (``models/teachers.py``: ``DEFAULT_TEACHERS``). Registered like every architecture, so a cached or
user-saved state_dict is rebuilt by name (``--teacher-arch teacher_resnet``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from edgekd.models.students import PooledClassifier, register


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the input (a 1x1 projection when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class TeacherResNet(PooledClassifier):
    """Stem, one stage per width (the first at full resolution, then stride 2), global pool, linear classifier."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, widths: Sequence[int] = (32, 64, 128),
                 blocks: Sequence[int] = (1, 2, 2), dropout: float = 0.1) -> None:
        if len(widths) != len(blocks):
            raise ValueError(f"widths {tuple(widths)} and blocks {tuple(blocks)} differ in length")
        cin, size = input_shape[0], min(input_shape[1:])
        layers: list[nn.Module] = [nn.Conv2d(cin, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                   nn.ReLU(inplace=True)]
        prev = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            stride = 2 if i > 0 and size >= 4 else 1
            size //= stride
            for j in range(n):
                layers.append(BasicBlock(prev, w, stride if j == 0 else 1))
                prev = w
        super().__init__(nn.Sequential(*layers), prev, num_classes, dropout)


@register("teacher_resnet")
def _teacher_resnet(input_shape, num_classes, **config) -> nn.Module:
    return TeacherResNet(input_shape, num_classes, **config)
