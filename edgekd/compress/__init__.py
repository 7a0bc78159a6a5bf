"""Post-distillation compression: calibration sets (and, later, pruning)."""
