"""Count MACs and parameters, and pick the largest student that fits a target's budget."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgekd.errors import EdgekdError
from edgekd.models.layer_costs import layer_features, macs_of
from edgekd.models.students import STUDENT_FAMILIES, build_model, student_family
from edgekd.targets import StudentBudget


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def example_input(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> torch.Tensor:
    """A batch ``model`` takes: float zeros, or, for a model that declares integer inputs (a text model's
    ``input_dtype = torch.int32``: token ids), ids of 1 ([UNK]) so no sequence is all padding."""
    dtype = getattr(model, "input_dtype", torch.float32)
    if dtype.is_floating_point:
        return torch.zeros((batch, *input_shape), dtype=dtype)
    return torch.ones((batch, *input_shape), dtype=dtype)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates for one sample (batch 1): FLOPs of matmuls and convolutions / 2."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input(model, input_shape))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops() // 2)


def size_of(family: str, input_shape: tuple[int, ...], num_classes: int, config: dict[str, Any]) -> tuple[int, int]:
    """(params, MACs) of a student configuration, built on the meta device (no weights allocated or initialised)
    and counted in one hooked pass (``layer_costs``): sizing a search space of large candidates takes seconds
    instead of minutes (same counts as ``count_macs``, tested)."""
    with torch.device("meta"):
        model = build_model(family, input_shape, num_classes, **config)
        return count_params(model), macs_of(layer_features(model, input_shape))


@dataclass(frozen=True)
class StudentChoice:
    family: str
    config: dict[str, Any]
    params: int
    macs: int
    max_params: int
    max_macs: int | None
    candidates_considered: int
    candidates_fitting: int
    rule: str = ""
    # The record of a latency search and of the pre-flight (edgekd.selection, stages/student.py): report.json
    # student.selection, not part of budget_fit.
    selection: dict[str, Any] | None = field(default=None, compare=False)

    def build(self, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return build_model(self.family, input_shape, num_classes, **self.config)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "selection"}


def fit_student_to_budget(
    input_shape: tuple[int, ...],
    num_classes: int,
    budget: StudentBudget,
    teacher_macs: int | None = None,
) -> StudentChoice:
    """Pick the configuration with the most MACs (then params) inside both limits of the budget."""
    return ranked_students(input_shape, num_classes, budget, teacher_macs)[0]


def ranked_students(input_shape: tuple[int, ...], num_classes: int, budget: StudentBudget,
                    teacher_macs: int | None = None) -> list[StudentChoice]:
    """Every configuration inside both limits, best first by SELECTION_RULE (pre-flight falls back down the list)."""
    spec = student_family(budget.family, input_shape)
    family = spec.name
    max_macs = budget.max_macs
    if teacher_macs:
        cap = int(teacher_macs * budget.max_teacher_macs_ratio)
        max_macs = cap if max_macs is None else min(max_macs, cap)
    candidates = spec.search_space(budget.channel_multiple)
    fitting: list[tuple[int, int, dict]] = []
    smallest: tuple[int, int] | None = None
    for config in candidates:
        params, macs = size_of(family, input_shape, num_classes, config)
        if smallest is None or macs < smallest[1]:
            smallest = (params, macs)
        if params <= budget.max_params and (max_macs is None or macs <= max_macs):
            fitting.append((macs, params, config))
    if not fitting:
        assert smallest is not None
        raise EdgekdError(
            f"no '{family}' student fits the budget (max_params={budget.max_params}, max_macs={max_macs}); "
            f"the smallest has {smallest[0]} params and {smallest[1]} MACs",
            "raise student_budget.max_params / max_macs / max_teacher_macs_ratio in the target file",
        )
    fitting.sort(key=lambda t: (capacity_score(family, t[0], t[2]), t[1]), reverse=True)
    return [StudentChoice(family, config, params, macs, budget.max_params, max_macs, len(candidates), len(fitting),
                          SELECTION_RULE) for macs, params, config in fitting]


# Capacity: how much accuracy a configuration can hold, to rank students inside a budget (MAC fit and latency
# search alike). Measured by benchmarks/capacity_proxy.py (13 designed students per data set, distilled 3 epochs,
# Spearman with validation accuracy; benchmarks/results/capacity_proxy.json):
# - depth: every layer costs a kernel launch and a memory round-trip MAC counts don't show, and at short schedules a
#   deep narrow net trains worse than a shallow wide one of the same MACs: each extra block per stage must buy 25 %
#   more MACs (Spearman on CIFAR-10 0.66 -> 0.74 over plain MACs; Fashion-MNIST 0.67 -> 0.66);
# - family: a dense resnet's MAC buys about half the accuracy of a MobileNetV2 MAC (the CIFAR-10 regression of
#   accuracy on log capacity and family gives 0.50), so StudentFamily.mac_weight scales it; fitted on CIFAR-10 and
#   checked on Fashion-MNIST, where it lifts the rank correlation from 0.66 to 0.86;
# - resolution: no penalty beyond the MACs it saves — scaling MACs by the side fraction ranked worse (0.53 mean),
#   and the accuracy lost by the lower-resolution students of latency_selection.json was their depth 3.
SELECTION_RULE = ("largest capacity = MACs x 0.8^(depth-1) x the family's MAC weight (mobilenetv2 1, resnet 0.5), "
                  "then most params")


def capacity_score(family: str, macs: int, config: dict[str, Any]) -> float:
    """SELECTION_RULE's capacity of one configuration (see the measurements above)."""
    weight = STUDENT_FAMILIES[family].mac_weight if family in STUDENT_FAMILIES else 1.0
    return macs * 0.8 ** (int(config.get("depth", 1)) - 1) * weight
