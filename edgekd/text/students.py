"""Text students and the default text teacher inside a build: the text registry (``edgekd.text.models``) seen
through the build's image-era interfaces.

A build's ``StudentChoice`` rebuilds its student by name (``models.students.build_model(family, input_shape,
num_classes, **config)``); a text family is registered there under its own name, with ``vocab_size`` carried in the
config beside ``width`` and ``max_len`` read from the input shape ``(max_len,)``. Every text model built here
declares ``input_dtype = torch.int32`` (token ids), which ``models.budget.example_input`` reads to count its MACs.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from edgekd.data import Dataset
from edgekd.errors import EdgekdError
from edgekd.models.budget import StudentChoice
from edgekd.models.students import ARCHITECTURES
from edgekd.models.teachers import Teacher
from edgekd.targets import StudentBudget
from edgekd.text.models import TEXT_STUDENTS, build_text_student, ranked_text_students
from edgekd.text.teachers import DEFAULT_TEXT_TEACHER, default_text_teacher, load_hf_teacher

TEXT_RULE = "the widest width of the text family inside max_params and max_macs (MACs, then params)"


def mark_text(model: nn.Module) -> nn.Module:
    """Declare ``model`` a token-id model (see the module docstring)."""
    model.input_dtype = torch.int32
    return model


def _build(family: str, input_shape: tuple[int, ...], num_classes: int, *, width: int, vocab_size: int) -> nn.Module:
    return mark_text(build_text_student(family, vocab_size=vocab_size, num_classes=num_classes,
                                        max_len=int(input_shape[0]), width=width))


def register_architectures() -> None:
    """Every text family becomes an architecture ``build_model`` knows (idempotent)."""
    for name in TEXT_STUDENTS:
        ARCHITECTURES.setdefault(name, functools.partial(_build, name))


def ranked_students(data: Dataset, budget: StudentBudget, teacher_macs: int | None) -> list[StudentChoice]:
    """The text family's widths inside the budget, best first, as the build's ``StudentChoice`` rows. The MAC cap
    also holds the student under ``max_teacher_macs_ratio`` of the teacher, as for images."""
    register_architectures()
    max_macs = budget.max_macs
    if teacher_macs:
        cap = int(teacher_macs * budget.max_teacher_macs_ratio)
        max_macs = cap if max_macs is None else min(max_macs, cap)
    family = "auto" if budget.family in ("auto", None) else budget.family
    ranked = ranked_text_students(family, vocab_size=data.vocab_size, num_classes=data.num_classes,
                                  max_len=int(data.input_shape[0]), max_params=budget.max_params, max_macs=max_macs,
                                  channel_multiple=budget.channel_multiple)
    considered = len(TEXT_STUDENTS[ranked[0].family].search_space(budget.channel_multiple))
    return [StudentChoice(c.family, {"width": c.width, "vocab_size": data.vocab_size}, c.params, c.macs,
                          budget.max_params, max_macs, considered, len(ranked), TEXT_RULE) for c in ranked]


def default_teacher(data: Dataset) -> tuple[str, nn.Module]:
    """The default text teacher for ``data``, untrained, and its architecture name (part of its cache key)."""
    model = default_text_teacher(data.vocab_size, data.num_classes, int(data.input_shape[0]))
    return DEFAULT_TEXT_TEACHER, mark_text(model).train()


def load_text_teacher(path: str, data: Dataset) -> Teacher:
    """``--teacher DIR``: a local Hugging Face sequence classifier (``text.teachers.load_hf_teacher``: safetensors
    only, offline, no remote code), checked against the data: its vocabulary tokenized it, and its labels must be
    the data's classes."""
    model = load_hf_teacher(path)
    config = model.model.config
    if model.vocab.size != data.vocab_size:
        raise EdgekdError(f"the data was tokenized with a {data.vocab_size}-token vocabulary, the teacher {path} has "
                          f"{model.vocab.size}", "build with --teacher DIR so the data is tokenized by its vocab.txt")
    if model.num_labels != data.num_classes:
        raise EdgekdError(f"the Hugging Face teacher {path} has {model.num_labels} labels, the data "
                          f"{data.num_classes} classes ({', '.join(data.classes)})",
                          "fine-tune the teacher on these classes, or pass the matching --label-column")
    names = [str((config.id2label or {}).get(i, f"LABEL_{i}")) for i in range(model.num_labels)]
    if names != [f"LABEL_{i}" for i in range(len(names))] and [n.lower() for n in names] != [
            c.lower() for c in data.classes]:
        raise EdgekdError(f"the Hugging Face teacher {path} labels its outputs {names}, the data's classes are "
                          f"{data.classes} (sorted)", "save the teacher with id2label in the data's class order")
    kind = str(getattr(config, "model_type", "transformer"))
    return Teacher(mark_text(model), "huggingface", f"hf:{kind}", f"Hugging Face {kind} from {path}",
                   {"max_position_embeddings": model.max_len})
