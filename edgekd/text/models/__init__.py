"""Text student families: networks that read token ids and return class logits.

The contract every family keeps (the text pipeline, the runner and the KD losses rely on it): a model takes ONE
tensor ``input_ids``, int32 (int64 accepted) of shape [batch, max_len], right-padded with id 0 (``[PAD]``), derives
its mask inside the graph (``ids != 0``) and returns logits [batch, num_classes]. Padding never changes a sequence's
logits (tested per family), so the device can pad to ``max_len`` without changing the answer.

A family is one file under ``edgekd/text/models/`` registered with ``@register_text_family``. Its size knob is one
integer, ``width`` (embedding / hidden channels); ``TextStudentFamily.cost`` counts params and MACs of a width on the
meta device (no weights allocated), so a budget (``StudentBudget.max_params`` / ``max_macs``) sizes a student the
way ``edgekd.models.budget`` sizes an image one: ``ranked_text_students`` lists the widths inside the budget,
largest first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgekd.errors import EdgekdError

TextBuilder = Callable[..., nn.Module]  # (vocab_size=, num_classes=, max_len=, width=) -> nn.Module

DEFAULT_WIDTHS = (16, 24, 32, 48, 64, 96, 128, 192, 256)


@dataclass(frozen=True)
class TextStudentFamily:
    """A text student family: its builder, the widths the budget tries, and what each costs."""

    name: str
    builder: TextBuilder
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    width_multiple: int = 8  # widths are rounded to a multiple of this (and of the target's channel multiple)
    # TFLite ops the static int8 recipe (ai-edge-quantizer static_wi8_ai8) leaves in float for this family, as the
    # converted artifact reports them (backends.tflite.describe "float_ops"); the table is in the family's file and
    # tests/text/test_text_models.py converts each family to check it
    int8_float_ops: tuple[str, ...] = ()

    def build(self, *, vocab_size: int, num_classes: int, max_len: int, width: int) -> nn.Module:
        return self.builder(vocab_size=vocab_size, num_classes=num_classes, max_len=max_len, width=width)

    def search_space(self, channel_multiple: int = 8) -> list[dict]:
        """Candidate configurations (``{"width": w}``), each width rounded up to both multiples, smallest first."""
        step = _lcm(self.width_multiple, channel_multiple)
        return [{"width": w} for w in sorted({-(-w // step) * step for w in self.widths})]

    def cost(self, *, vocab_size: int, num_classes: int, max_len: int, width: int) -> tuple[int, int]:
        """(params, MACs for one sequence of ``max_len`` tokens) of a width, counted on the meta device."""
        with torch.device("meta"):
            model = self.build(vocab_size=vocab_size, num_classes=num_classes, max_len=max_len, width=width).eval()
            params = sum(p.numel() for p in model.parameters())
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(torch.ones((1, max_len), dtype=torch.int32))
        return params, int(counter.get_total_flops() // 2)


TEXT_STUDENTS: dict[str, TextStudentFamily] = {}


def register_text_family(name: str, *, widths: tuple[int, ...] = DEFAULT_WIDTHS, width_multiple: int = 8,
                         int8_float_ops: tuple[str, ...] = ()) -> Callable[[TextBuilder], TextBuilder]:
    """Register a text student family under ``name`` (its builder takes keyword arguments only)."""
    def deco(fn: TextBuilder) -> TextBuilder:
        TEXT_STUDENTS[name] = TextStudentFamily(name, fn, tuple(widths), width_multiple, tuple(int8_float_ops))
        return fn

    return deco


def text_student_family(name: str) -> TextStudentFamily:
    """The named family; ``auto`` is the embedding CNN (the cheapest to run and to quantize)."""
    name = "text_cnn" if name == "auto" else name
    if name not in TEXT_STUDENTS:
        raise EdgekdError(f"unknown text student family '{name}'",
                          f"set student_budget.family to auto or one of: {', '.join(sorted(TEXT_STUDENTS))}")
    return TEXT_STUDENTS[name]


def build_text_student(family: str, *, vocab_size: int, num_classes: int, max_len: int, width: int) -> nn.Module:
    """Build a text student by family name (see the module docstring for the input/output contract)."""
    return text_student_family(family).build(vocab_size=vocab_size, num_classes=num_classes, max_len=max_len,
                                             width=width)


@dataclass(frozen=True)
class TextStudentChoice:
    family: str
    width: int
    params: int
    macs: int


def ranked_text_students(family: str, *, vocab_size: int, num_classes: int, max_len: int, max_params: int,
                         max_macs: int | None = None, channel_multiple: int = 8) -> list[TextStudentChoice]:
    """Every width of the family inside the limits, largest (most MACs, then params) first."""
    spec = text_student_family(family)
    fitting: list[TextStudentChoice] = []
    smallest: tuple[int, int] | None = None
    for config in spec.search_space(channel_multiple):
        params, macs = spec.cost(vocab_size=vocab_size, num_classes=num_classes, max_len=max_len, **config)
        smallest = smallest or (params, macs)
        if params <= max_params and (max_macs is None or macs <= max_macs):
            fitting.append(TextStudentChoice(spec.name, config["width"], params, macs))
    if not fitting:
        assert smallest is not None
        raise EdgekdError(f"no '{spec.name}' text student fits the budget (max_params={max_params}, "
                          f"max_macs={max_macs}); the smallest has {smallest[0]} params and {smallest[1]} MACs",
                          "raise student_budget.max_params / max_macs in the target file, or shrink the vocabulary")
    return sorted(fitting, key=lambda c: (c.macs, c.params), reverse=True)


def padding_mask(input_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """1.0 at real tokens, 0.0 at ``[PAD]`` (id 0): [batch, len]. Every family derives its mask here, in-graph."""
    return (input_ids != 0).to(dtype)


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)


from edgekd.text.models import cnn, lstm, transformer  # noqa: E402,F401 - each family file registers itself
