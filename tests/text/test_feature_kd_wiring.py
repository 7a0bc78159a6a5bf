"""The build's distillation adds TinyBERT's hidden-state and attention transfer for a transformer pair only
(``stages.distill.with_feature_kd``); tests/text/test_text_kd.py computes those losses on real taps."""

from __future__ import annotations

import pytest
import torch
from test_text_data import sentiment_rows, write_csv

from edgekd.data import load_dataset
from edgekd.distill.trainer import TrainConfig, train
from edgekd.stages.distill import TINYBERT_WEIGHTS, with_feature_kd
from edgekd.text.models import build_text_student
from edgekd.text.teachers import default_text_teacher

VOCAB, MAX_LEN = 40, 10


def student(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_text_student(family, vocab_size=VOCAB, num_classes=2, max_len=MAX_LEN, width=32)


def test_a_transformer_pair_gets_both_tinybert_losses():
    config = TrainConfig(epochs=1)
    out = with_feature_kd(config, student("text_transformer"), default_text_teacher(VOCAB, 2, MAX_LEN))
    assert out.loss_weights == {**TINYBERT_WEIGHTS, "kd": 0.7, "ce": 0.3}
    assert set(out.loss_options) == {"tinybert_hidden", "tinybert_attention"}
    assert config.loss_weights == {"kd": 0.7, "ce": 0.3}  # the alone run's config is untouched


def test_a_user_weight_for_a_tinybert_loss_wins():
    config = TrainConfig(epochs=1, loss_weights={"kd": 0.5, "ce": 0.5, "tinybert_hidden": 0.4})
    out = with_feature_kd(config, student("text_transformer"), default_text_teacher(VOCAB, 2, MAX_LEN))
    assert out.loss_weights["tinybert_hidden"] == 0.4 and out.loss_weights["tinybert_attention"] == 0.1


def test_a_cnn_student_or_an_ensemble_keeps_logit_kd_only():
    config = TrainConfig(epochs=1)
    teacher = default_text_teacher(VOCAB, 2, MAX_LEN)
    assert with_feature_kd(config, student("text_cnn"), teacher) is config
    assert with_feature_kd(config, student("text_transformer"), [teacher, teacher]) is config


@pytest.mark.slow
def test_the_tinybert_mix_trains_a_transformer_student(tmp_path):
    write_csv(tmp_path / "train.csv", sentiment_rows(120))
    write_csv(tmp_path / "test.csv", sentiment_rows(20, seed=1))
    data = load_dataset(str(tmp_path), seed=0, text_column="text", label_column="label")
    max_len = int(data.input_shape[0])
    teacher = default_text_teacher(data.vocab_size, 2, max_len).eval()
    torch.manual_seed(0)
    model = build_text_student("text_transformer", vocab_size=data.vocab_size, num_classes=2, max_len=max_len,
                               width=32)
    result = train(model, data, with_feature_kd(TrainConfig(epochs=1), model, teacher), teacher=teacher,
                   progress=False)
    epoch = result.history[-1]
    assert epoch["loss_tinybert_hidden"] > 0 and epoch["loss_tinybert_attention"] > 0
