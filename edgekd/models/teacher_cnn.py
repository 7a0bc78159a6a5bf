"""``teacher_cnn``: the default teacher for 28x28-32x32 images when a user brings none (``DEFAULT_TEACHERS``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from edgekd.models.students import PooledClassifier, conv_bn_relu, register


class TeacherCNN(PooledClassifier):
    """A plain VGG-style CNN: strong on small images and cheap to train on two cores."""

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, widths: Sequence[int] = (64, 128, 256),
        dropout: float = 0.2,
    ) -> None:
        cin = input_shape[0]
        layers: list[nn.Module] = []
        for i, w in enumerate(widths):
            layers += [conv_bn_relu(cin, w), conv_bn_relu(w, w)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        super().__init__(nn.Sequential(*layers), cin, num_classes, dropout)


@register("teacher_cnn")
def _teacher_cnn(input_shape, num_classes, **config) -> nn.Module:
    return TeacherCNN(input_shape, num_classes, **config)
