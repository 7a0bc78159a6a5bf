"""The students worth considering: family x width x depth x input resolution (images), or the MLP widths (flat
data), each with its size (params, MACs) and the per-layer features the latency predictor fits on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.models.budget import count_params
from edgekd.models.layer_costs import FEATURES, layer_features, macs_of
from edgekd.models.students import STUDENT_FAMILIES, StudentFamily, build_model, student_family
from edgekd.targets import StudentBudget

# Resolutions tried for a resizable family, as fractions of the data's side; below MIN_SIDE pixels a CNN has nothing
# left to see. The widths, depths and expansions are each family's own search space (models/<family>.py): one grid
# for the MAC fit and the latency search.
RESOLUTION_FRACTIONS = (1.0, 0.75, 0.5)
MIN_SIDE = 8


def candidate_name(family: str, config: dict[str, Any]) -> str:
    """``mobilenetv2(depth=1, expand=4, width=0.5)``: how reports and logs name a configuration."""
    parts = [f"{k}={v}" for k, v in sorted(config.items()) if k != "channel_multiple"]
    return f"{family}({', '.join(parts)})"


@dataclass
class Candidate:
    family: str
    config: dict[str, Any]
    params: int
    macs: int
    features: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return candidate_name(self.family, self.config)

    def key(self, input_shape: tuple[int, ...], num_classes: int) -> str:
        """Stable identity of the network (cache key part): family, config, input shape, classes."""
        blob = json.dumps([self.family, self.config, list(input_shape), num_classes], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return build_model(self.family, input_shape, num_classes, **self.config)


def search_families(name: str, input_shape: tuple[int, ...]) -> list[StudentFamily]:
    """The families a latency search ranks: the named one, or for ``auto`` every family made for this kind of
    input (images: mobilenetv2 and resnet), falling back to those that take any input (mlp)."""
    if name != "auto":
        return [student_family(name, input_shape)]
    kind = "image" if len(input_shape) == 3 else "flat"
    made_for = [f for f in STUDENT_FAMILIES.values() if f.inputs == kind]
    return made_for or [student_family("auto", input_shape)]


def _configs(family: StudentFamily, input_shape: tuple[int, ...], multiple: int) -> list[dict[str, Any]]:
    space = family.search_space(multiple)
    if not family.resizable:
        return space
    side = min(input_shape[1], input_shape[2])
    sides = sorted({max(MIN_SIDE, int(round(side * f))) for f in RESOLUTION_FRACTIONS if side * f >= MIN_SIDE}
                   | {side}, reverse=True)
    return [{**config, **({"resolution": r} if r != side else {})} for r in sides for config in space]


def enumerate_candidates(input_shape: tuple[int, ...], num_classes: int, budget: StudentBudget,
                         max_macs: int | None = None) -> tuple[list[Candidate], int]:
    """(candidates inside the params/MACs limits, how many configurations were enumerated). Each is sized on the
    meta device in one forward pass whose hooks give both the MACs and the predictor's per-layer features
    (FlopCounterMode's separate pass cost 0.19 s of the 0.25 s per configuration; the counts agree, tested)."""
    enumerated, out = 0, []
    for family in search_families(budget.family, input_shape):
        configs = _configs(family, input_shape, budget.channel_multiple)
        enumerated += len(configs)
        for config in configs:
            with torch.device("meta"):  # sizes only: no weights allocated (see models.budget.size_of)
                model = build_model(family.name, input_shape, num_classes, **config)
                params = count_params(model)
                if params > budget.max_params:
                    continue
                features = layer_features(model, input_shape)
            macs = macs_of(features)
            if max_macs is not None and macs > max_macs:
                continue
            out.append(Candidate(family.name, config, params, macs, features))
    return out, enumerated


def feature_matrix(candidates: list[Candidate]) -> np.ndarray:
    return np.asarray([[c.features[f] for f in FEATURES] for c in candidates], dtype=np.float64)
