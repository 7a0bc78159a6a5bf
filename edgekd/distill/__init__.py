"""Distillation: a registry of losses and the trainer that mixes them.

Importing the package registers every shipped loss family (each module's ``@register_loss`` runs on import).
"""

from edgekd.distill import (  # noqa: F401 - imported to register losses
    attention,
    dkd,
    hints,
    losses,
    rkd,
    tinybert_attention,
    tinybert_hidden,
)
