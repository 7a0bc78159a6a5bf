"""TinyBERT hidden-state transfer (Jiao et al., 2020): MSE between a student layer's token states, projected to the
teacher's width by a learned linear map (TinyBERT's W_h), and the teacher layer's.

Unlike ``hint`` (which flattens whole feature maps), the projection is per token: [batch, len, d_s] -> [batch, len,
d_t], one d_s x d_t matrix whatever the sequence length. Paths name the layers' outputs; ``edgekd.text.kd`` maps a
student's layers onto a teacher's uniformly, as TinyBERT does (embeddings onto embeddings, layer i onto layer
i * N_t / N_s). As in TinyBERT, every position counts, padding included (both models see the same ids).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.distill.losses import PairedFeatureLoss, register_loss
from edgekd.errors import EdgekdError

DEFAULT_HIDDEN_PATH = "hidden_taps.0"  # the embeddings' output of every edgekd text transformer (and HF wrapper)


@register_loss("tinybert_hidden")
class TinyBertHidden(PairedFeatureLoss):
    """Mean over pairs of MSE(W s, t) for token states s [B, L, d_s], t [B, L, d_t]."""

    def __init__(self, student: str | list[str] = DEFAULT_HIDDEN_PATH,
                 teacher: str | list[str] = DEFAULT_HIDDEN_PATH) -> None:
        super().__init__(student, teacher)
        self.projections = nn.ModuleList()

    def setup(self, student_shapes: dict[str, torch.Size], teacher_shapes: dict[str, torch.Size]) -> None:
        self.projections = nn.ModuleList()
        for s_path, t_path in self.pairs:
            s, t = student_shapes[s_path], teacher_shapes[t_path]
            if len(s) != 3 or len(t) != 3 or s[1] != t[1]:
                raise EdgekdError(f"tinybert_hidden needs token states [batch, len, width] of the same length: "
                                  f"student '{s_path}' is {list(s)}, teacher '{t_path}' is {list(t)}",
                                  "pair transformer layers fed the same token ids, or drop tinybert_hidden")
            self.projections.append(nn.Identity() if s[2] == t[2] else nn.Linear(s[2], t[2]))

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.projections[index](s).float(), t.float())
