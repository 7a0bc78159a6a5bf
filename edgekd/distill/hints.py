"""FitNets hints (Romero et al., 2015): regress the teacher's intermediate features from the student's.

Shapes rarely match, so each pair gets a learned adapter on the student side (1x1 conv for maps, linear for
vectors) when channel counts differ, spatial sizes are pooled to the smaller one, and a map meeting a vector
is globally pooled: any CNN/MLP pair works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.losses import DEFAULT_FEATURE_PATH, PairedFeatureLoss, register_loss


def align_pair(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Make two feature tensors comparable up to channels: same rank (2-D or 4-D) and same spatial size."""
    if s.ndim == 4 and t.ndim == 4:
        size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
        if tuple(s.shape[2:]) != size:
            s = F.adaptive_avg_pool2d(s, size)
        if tuple(t.shape[2:]) != size:
            t = F.adaptive_avg_pool2d(t, size)
        return s, t
    return flatten_features(s), flatten_features(t)


def flatten_features(x: torch.Tensor) -> torch.Tensor:
    """A per-sample vector: global average pool for maps (N,C,H,W), flatten for anything else."""
    if x.ndim == 4:
        return x.mean(dim=(2, 3))
    return x.flatten(1)


@register_loss("hint")
class FitNetHint(PairedFeatureLoss):
    """MSE between adapted student features and teacher features, for each (student, teacher) path pair."""

    def __init__(self, student: str | list[str] = DEFAULT_FEATURE_PATH, teacher: str | list[str] = DEFAULT_FEATURE_PATH,
                 normalize: bool = False) -> None:
        super().__init__(student, teacher)
        self.normalize = normalize
        self.adapters = nn.ModuleList()

    def setup(self, student_shapes: dict[str, torch.Size], teacher_shapes: dict[str, torch.Size]) -> None:
        self.adapters = nn.ModuleList()
        for s_path, t_path in self.pairs:
            s, t = align_pair(torch.zeros(1, *student_shapes[s_path][1:]), torch.zeros(1, *teacher_shapes[t_path][1:]))
            cs, ct = s.shape[1], t.shape[1]
            if s.ndim == 4:
                self.adapters.append(nn.Identity() if cs == ct else nn.Conv2d(cs, ct, 1, bias=False))
            else:
                self.adapters.append(nn.Identity() if cs == ct else nn.Linear(cs, ct, bias=False))

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s, t = align_pair(s, t)
        s, t = self.adapters[index](s).float(), t.float()
        if self.normalize:  # compare directions only: robust to teachers with large activations
            s, t = F.normalize(s.flatten(1), dim=1), F.normalize(t.flatten(1), dim=1)
        return F.mse_loss(s, t)
