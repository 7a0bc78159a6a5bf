"""TinyBERT attention transfer (Jiao et al., 2020): MSE between a student layer's attention matrices and the
mapped teacher layer's, [batch, heads, len, len].

TinyBERT matches the pre-softmax scores head by head; this matches the probabilities: they are bounded (no -1e4
padding bias to exclude) and defined for any teacher (a Hugging Face model returns probabilities). Where the
head counts differ, both sides are averaged over heads first (a student narrower than its teacher usually has
fewer). Paths name ``attention_taps.{i}`` of an edgekd text transformer or the Hugging Face wrapper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.losses import PairedFeatureLoss, register_loss
from edgekd.errors import EdgekdError

DEFAULT_ATTENTION_PATH = "attention_taps.0"


@register_loss("tinybert_attention")
class TinyBertAttention(PairedFeatureLoss):
    """Mean over pairs of MSE between attention probabilities (head-averaged where head counts differ)."""

    def __init__(self, student: str | list[str] = DEFAULT_ATTENTION_PATH,
                 teacher: str | list[str] = DEFAULT_ATTENTION_PATH) -> None:
        super().__init__(student, teacher)

    def setup(self, student_shapes: dict[str, torch.Size], teacher_shapes: dict[str, torch.Size]) -> None:
        for s_path, t_path in self.pairs:
            s, t = student_shapes[s_path], teacher_shapes[t_path]
            if len(s) != 4 or len(t) != 4 or s[2:] != t[2:] or s[2] != s[3]:
                raise EdgekdError(f"tinybert_attention needs attention matrices [batch, heads, len, len] of the same "
                                  f"length: student '{s_path}' is {list(s)}, teacher '{t_path}' is {list(t)}",
                                  "pair attention taps of transformers fed the same token ids, or drop "
                                  "tinybert_attention")

    def pair_loss(self, index: int, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s, t = s.float(), t.float()
        if s.shape[1] != t.shape[1]:
            s, t = s.mean(1), t.mean(1)
        return F.mse_loss(s, t)
