"""Relational KD (Park et al., CVPR 2019): match the *geometry* of a batch's embeddings, not the embeddings.

Distances between samples (normalised by their mean) and angles between triplets are invariant to the
embedding width, so student and teacher need no adapter. Maps are globally pooled into embeddings first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.hints import flatten_features
from edgekd.distill.losses import DEFAULT_FEATURE_PATH, DistillLoss, LossInputs, register_loss


def _pairwise_distance(e: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(e, e)
    positive = d[d > 0]
    return d / positive.mean().clamp_min(1e-8) if positive.numel() else d


def _angles(e: torch.Tensor) -> torch.Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # (N, N, D): unit vectors e_j - e_i
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


@register_loss("rkd")
class RelationalKD(DistillLoss):
    """``distance`` x RKD-D + ``angle`` x RKD-A (the paper's 1:2 ratio by default), smooth-L1 on both."""

    def __init__(self, student: str = DEFAULT_FEATURE_PATH, teacher: str = DEFAULT_FEATURE_PATH,
                 distance: float = 1.0, angle: float = 2.0) -> None:
        super().__init__()
        self.student_path, self.teacher_path = student, teacher
        self.distance, self.angle = distance, angle

    def feature_pairs(self) -> list[tuple[str, str]]:
        return [(self.student_path, self.teacher_path)]

    def forward(self, batch: LossInputs) -> torch.Tensor:
        s = flatten_features(batch.student_features[self.student_path]).float()
        t = flatten_features(batch.teacher_features[self.teacher_path]).float()
        loss = s.new_zeros(())
        if self.distance:
            loss = loss + self.distance * F.smooth_l1_loss(_pairwise_distance(s), _pairwise_distance(t))
        if self.angle:
            loss = loss + self.angle * F.smooth_l1_loss(_angles(s), _angles(t))
        return loss
