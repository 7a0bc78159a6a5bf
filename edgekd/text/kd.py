"""Which KD losses a text student/teacher pair can use, and their layer mapping (TinyBERT's uniform one).

Logit KD (``kd``) applies to every pair. Hidden-state and attention transfer (``tinybert_hidden``,
``tinybert_attention``) apply when both models are transformers exposing ``hidden_taps`` / ``attention_taps`` (the
edgekd text transformer, its default teacher, a Hugging Face teacher): student layer i (1..N_s) reads teacher layer
i * N_t / N_s, and embeddings read embeddings. A CNN or BiLSTM student gets logit KD only.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs, 0 = embeddings; every student layer maps (TinyBERT's g(m) = m * N/M)."""
    if student_layers < 1 or teacher_layers < student_layers:
        return [(i, min(i, teacher_layers)) for i in range(student_layers + 1)]
    return [(i, i * teacher_layers // student_layers) for i in range(student_layers + 1)]


def is_text_transformer(model: nn.Module) -> bool:
    return isinstance(getattr(model, "hidden_taps", None), nn.ModuleList) and isinstance(
        getattr(model, "attention_taps", None), nn.ModuleList)


def tinybert_options(student: nn.Module, teacher: nn.Module) -> dict[str, dict[str, Any]]:
    """Loss options for ``LossMix`` (``{"tinybert_hidden": {...}, "tinybert_attention": {...}}``) naming the mapped
    taps of the pair, or ``{}`` when the pair is not two text transformers (logit KD only)."""
    if not (is_text_transformer(student) and is_text_transformer(teacher)):
        return {}
    pairs = layer_map(len(student.attention_taps), len(teacher.attention_taps))
    hidden = {"student": [f"hidden_taps.{s}" for s, _ in pairs], "teacher": [f"hidden_taps.{t}" for _, t in pairs]}
    attention = {"student": [f"attention_taps.{s - 1}" for s, _ in pairs[1:]],
                 "teacher": [f"attention_taps.{t - 1}" for _, t in pairs[1:]]}
    return {"tinybert_hidden": hidden, "tinybert_attention": attention}
