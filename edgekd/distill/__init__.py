"""Distillation: a registry of losses and the trainer that mixes them.

Importing the package registers every shipped loss family (each module's ``@register_loss`` runs on import).
"""

from edgekd.distill import attention, dkd, hints, losses, rkd  # noqa: F401 - imported to register losses
