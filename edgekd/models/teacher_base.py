"""What a loaded teacher is, whichever loader made it: PyTorch files (``models.teachers``) and models that run
outside PyTorch (``models.foreign_teachers``) both return one, so the record sits below both loaders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn


@dataclass
class Teacher:
    model: nn.Module
    source: str  # "trained-default" | "torchscript" | "torch.export" | "state_dict" | "onnx" | "skops"
    arch: str
    description: str
    config: dict[str, Any]
