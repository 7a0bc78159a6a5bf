"""TinyBERT transfer for text transformers: the layer map, the options a pair gets, and the two losses computed
on real taps of a student and a teacher."""

from __future__ import annotations

import copy

import pytest
import torch

from edgekd.distill.losses import LossInputs, LossMix
from edgekd.distill.taps import FeatureTaps
from edgekd.errors import EdgekdError
from edgekd.text.kd import layer_map, tinybert_options
from edgekd.text.models import build_text_student
from edgekd.text.teachers import default_text_teacher

VOCAB, MAX_LEN = 40, 10


def ids() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    out = torch.randint(1, VOCAB, (3, MAX_LEN), generator=gen, dtype=torch.int32)
    out[1, 4:] = 0
    return out


def transformer_student(width: int = 32) -> torch.nn.Module:
    torch.manual_seed(1)
    return build_text_student("text_transformer", vocab_size=VOCAB, num_classes=2, max_len=MAX_LEN, width=width)


def mix_for(student, teacher, weights) -> tuple[LossMix, FeatureTaps, FeatureTaps]:
    """A LossMix set up the way the trainer does it: taps on both models, shapes from one probe batch."""
    options = {name: opts for name, opts in tinybert_options(student, teacher).items() if name in weights}
    mix = LossMix(weights, options=options)
    s_taps, t_taps = FeatureTaps(student, mix.student_paths()), FeatureTaps(teacher, mix.teacher_paths())
    with torch.no_grad():
        student(ids()), teacher(ids())
    mix.setup({k: v.shape for k, v in s_taps.take().items()}, {k: v.shape for k, v in t_taps.take().items()})
    return mix, s_taps, t_taps


def loss_of(mix, s_taps, t_taps, student, teacher) -> tuple[torch.Tensor, dict[str, float]]:
    with torch.no_grad():
        t_logits = teacher(ids())
    s_logits = student(ids())
    return mix(LossInputs(s_logits, torch.tensor([0, 1, 0]), t_logits, s_taps.take(), t_taps.take()))


def test_layer_map_is_tinybert_uniform():
    assert layer_map(2, 4) == [(0, 0), (1, 2), (2, 4)]
    assert layer_map(3, 6) == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert layer_map(2, 2) == [(0, 0), (1, 1), (2, 2)]


def test_options_name_mapped_taps_for_transformers_and_nothing_else():
    teacher = default_text_teacher(VOCAB, 2, MAX_LEN)
    options = tinybert_options(transformer_student(), teacher)
    assert options["tinybert_hidden"] == {"student": ["hidden_taps.0", "hidden_taps.1", "hidden_taps.2"],
                                          "teacher": ["hidden_taps.0", "hidden_taps.2", "hidden_taps.4"]}
    assert options["tinybert_attention"] == {"student": ["attention_taps.0", "attention_taps.1"],
                                             "teacher": ["attention_taps.1", "attention_taps.3"]}
    cnn = build_text_student("text_cnn", vocab_size=VOCAB, num_classes=2, max_len=MAX_LEN, width=16)
    assert tinybert_options(cnn, teacher) == {}


def test_losses_vanish_for_an_identical_pair_and_not_otherwise():
    student = transformer_student().eval()
    weights = {"tinybert_hidden": 1.0, "tinybert_attention": 1.0}
    twin = copy.deepcopy(student)
    same, s_taps, t_taps = mix_for(student, twin, weights)
    _, parts = loss_of(same, s_taps, t_taps, student, twin)
    assert parts == {"tinybert_hidden": 0.0, "tinybert_attention": 0.0}
    torch.manual_seed(5)
    teacher = build_text_student("text_transformer", vocab_size=VOCAB, num_classes=2, max_len=MAX_LEN, width=32)
    other, s_taps, t_taps = mix_for(student, teacher.eval(), weights)
    _, parts = loss_of(other, s_taps, t_taps, student, teacher)
    assert parts["tinybert_hidden"] > 0.1 and parts["tinybert_attention"] > 0


def test_narrow_student_is_projected_and_trained_toward_a_wide_teacher():
    student, teacher = transformer_student(width=32).train(), default_text_teacher(VOCAB, 2, MAX_LEN).eval()
    mix, s_taps, t_taps = mix_for(student, teacher, {"kd": 1.0, "tinybert_hidden": 1.0, "tinybert_attention": 1.0})
    projections = mix.terms["tinybert_hidden"].projections
    assert [(p.in_features, p.out_features) for p in projections] == [(32, 128)] * 3
    params = [*student.parameters(), *mix.parameters()]
    opt = torch.optim.Adam(params, lr=5e-3)
    first = None
    for _ in range(10):
        total, parts = loss_of(mix, s_taps, t_taps, student, teacher)
        first = first or parts
        opt.zero_grad()
        total.backward()
        opt.step()
    assert parts["tinybert_hidden"] < 0.75 * first["tinybert_hidden"]


def test_attention_transfer_reaches_the_students_queries_and_keys():
    student, teacher = transformer_student(width=32).train(), default_text_teacher(VOCAB, 2, MAX_LEN).eval()
    mix, s_taps, t_taps = mix_for(student, teacher, {"tinybert_attention": 1.0})
    total, _ = loss_of(mix, s_taps, t_taps, student, teacher)
    total.backward()
    qk_rows = 2 * 32  # qkv's output rows: queries, keys, then values (which attention probabilities never see)
    grad = student.layers[1].attention.qkv.weight.grad
    assert grad[:qk_rows].abs().sum() > 0 and grad[qk_rows:].abs().sum() == 0


def test_sequence_length_mismatch_is_a_user_error():
    loss = LossMix({"tinybert_hidden": 1.0}, options={"tinybert_hidden": {"student": "a", "teacher": "b"}})
    with pytest.raises(EdgekdError, match="same length"):
        loss.setup({"a": torch.Size([2, 8, 16])}, {"b": torch.Size([2, 10, 16])})
