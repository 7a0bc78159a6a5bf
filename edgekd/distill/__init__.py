"""Distillation: a registry of losses and the trainer that mixes them."""
