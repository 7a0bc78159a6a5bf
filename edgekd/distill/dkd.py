"""Decoupled KD (Zhao et al., CVPR 2022): Hinton's KL split into target-class and non-target-class parts.

Classic KD couples the two: when the teacher is confident, the non-target "dark knowledge" term is scaled down
by (1 - p_target). DKD weights them separately (``alpha`` TCKD + ``beta`` NCKD) so that knowledge is not lost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgekd.distill.losses import DistillLoss, LossInputs, check_temperature, register_loss, temperature_of


@register_loss("dkd")
class DecoupledKD(DistillLoss):
    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float | None = None) -> None:
        super().__init__()
        if temperature is not None:
            check_temperature(temperature)
        self.alpha, self.beta, self.temperature = alpha, beta, temperature

    def forward(self, batch: LossInputs) -> torch.Tensor:
        assert batch.teacher_logits is not None
        t = temperature_of(self.temperature, batch)
        s_logits, t_logits = batch.student_logits.float() / t, batch.teacher_logits.float() / t
        target = F.one_hot(batch.labels, s_logits.shape[1]).bool()
        p_s, p_t = F.softmax(s_logits, dim=1), F.softmax(t_logits, dim=1)
        # TCKD: binary (target vs rest) distributions.
        b_s = torch.stack([p_s[target], 1 - p_s[target]], dim=1).clamp_min(1e-8)
        b_t = torch.stack([p_t[target], 1 - p_t[target]], dim=1).clamp_min(1e-8)
        tckd = (b_t * (b_t.log() - b_s.log())).sum(1).mean()
        # NCKD: distributions over the non-target classes only (mask the target logit out).
        masked_s = s_logits.masked_fill(target, -1e4)
        masked_t = t_logits.masked_fill(target, -1e4)
        nckd = F.kl_div(F.log_softmax(masked_s, 1), F.log_softmax(masked_t, 1), reduction="batchmean",
                        log_target=True)
        return (self.alpha * tckd + self.beta * nckd) * (t * t)
