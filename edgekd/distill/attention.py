"""Attention transfer (Zagoruyko & Komodakis, 2017): match *where* the networks look, not what they compute.

The attention map is the channel-mean of squared activations, L2-normalised per sample, so it needs no adapter
whatever the channel counts; spatial sizes are pooled to the smaller one. For vector features (MLP) the
"map" is the normalised squared activation vector, pooled to the shorter length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.losses import DEFAULT_FEATURE_PATH, PairedFeatureLoss, register_loss


def attention_map(x: torch.Tensor, p: float = 2.0, size: tuple[int, ...] | None = None) -> torch.Tensor:
    """(N, H*W) normalised attention of a feature map (or (N, D) for vector features)."""
    x = x.float()
    if x.ndim == 4:
        a = x.abs().pow(p).mean(1, keepdim=True)
        if size is not None and tuple(a.shape[2:]) != size:
            a = F.adaptive_avg_pool2d(a, size)
    else:
        a = x.flatten(1).abs().pow(p).unsqueeze(1)
        if size is not None and a.shape[2] != size[0]:
            a = F.adaptive_avg_pool1d(a, size[0])
    return F.normalize(a.flatten(1), dim=1)


@register_loss("at")
class AttentionTransfer(PairedFeatureLoss):
    """Squared L2 distance between normalised attention maps (in [0, 4]: on CE's scale), per path pair."""

    def __init__(self, student: str | list[str] = DEFAULT_FEATURE_PATH, teacher: str | list[str] = DEFAULT_FEATURE_PATH,
                 p: float = 2.0) -> None:
        super().__init__(student, teacher)
        self.p = p

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if s.ndim == 4 and t.ndim == 4:
            size: tuple[int, ...] = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
        elif s.ndim == 4 or t.ndim == 4:  # a map meets a vector: compare globally pooled activations
            s = s.mean((2, 3)) if s.ndim == 4 else s
            t = t.mean((2, 3)) if t.ndim == 4 else t
            size = (min(s.flatten(1).shape[1], t.flatten(1).shape[1]),)
        else:
            size = (min(s.flatten(1).shape[1], t.flatten(1).shape[1]),)
        a_s, a_t = attention_map(s, self.p, size), attention_map(t, self.p, size)
        return (a_s - a_t).pow(2).sum(1).mean()
