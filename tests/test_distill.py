"""Distillation: loss registry and bad input, feature taps, multi-teacher, schedules, teacher cache, resume (DDP:
test_distributed.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.distill.losses import LOSSES, LossInputs, LossMix
from edgekd.distill.schedules import schedule_value
from edgekd.distill.taps import FeatureTaps, resolve_module
from edgekd.distill.teachers import combine_teacher_logits
from edgekd.distill.trainer import TrainConfig, train, validate_config
from edgekd.errors import EdgekdError
from edgekd.models.students import build_model
from tests.conftest import make_dataset

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def cnn_pair(data, teacher_seed: int = 1):
    torch.manual_seed(teacher_seed)
    teacher = build_model("teacher_cnn", data.input_shape, data.num_classes, widths=(8, 16))
    torch.manual_seed(0)
    student = build_model("mobilenetv2", data.input_shape, data.num_classes, width=0.25)
    return teacher, student


@pytest.fixture(scope="module")
def img():
    return make_dataset(n_train=96, shape=(1, 8, 8))


@pytest.fixture(scope="module")
def flat():
    return make_dataset(n_train=96, shape=(12,))


def test_registry_has_every_family():
    assert {"ce", "kd", "dkd", "hint", "at", "rkd"} <= set(LOSSES)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss_weights": {"kd": 1.0, "fitnet": 1.0}}, "unknown loss 'fitnet'"),
        ({"loss_weights": {"kd": 0.0, "ce": 0.0}}, "sum to > 0"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"temperature_schedule": {"kind": "linear", "end": -1.0}}, "temperature must be > 0"),
        ({"loss_options": {"dkd": {"beta": 2}}}, "not in the loss mix"),
        ({"loss_weights": {"dkd": 1.0}, "loss_options": {"dkd": {"gamma": 2}}}, "no option 'gamma'"),
        ({"lr_schedule": "step"}, "unknown lr schedule"),
        ({"device": "bogus"}, "unknown device 'bogus'"),
    ],
)
def test_bad_config_is_a_clear_error(img, kwargs, match):
    teacher, student = cnn_pair(img)
    with pytest.raises(EdgekdError, match=match):
        validate_config(TrainConfig(epochs=1, **kwargs))  # what api.build can call before training a teacher
    with pytest.raises(EdgekdError, match=match) as info:
        train(student, img, TrainConfig(epochs=1, **kwargs), teacher=teacher, progress=False)
    if "unknown loss" in match:
        assert "registered losses: at, ce, dkd, hint, kd, rkd" in str(info.value)


def test_feature_path_typo_lists_nearest_names(img):
    teacher, student = cnn_pair(img)
    with pytest.raises(EdgekdError, match="names no module of the teacher") as info:
        train(student, img, TrainConfig(epochs=1, loss_weights={"hint": 1.0},
                                        loss_options={"hint": {"teacher": "featurs.3"}}), teacher=teacher,
              progress=False)
    assert "features.3" in info.value.fix
    with pytest.raises(EdgekdError, match="names no module"):
        resolve_module(nn.Linear(2, 2), "features")


def test_class_count_mismatch(img):
    teacher = build_model("teacher_cnn", img.input_shape, img.num_classes + 2, widths=(8, 16))
    _, student = cnn_pair(img)
    with pytest.raises(EdgekdError, match="teacher 0 outputs 5 classes but the student 3"):
        train(student, img, TrainConfig(epochs=1), teacher=teacher, progress=False)


@pytest.mark.parametrize("mix", [{"kd": 0.7, "ce": 0.3}, {"dkd": 1.0, "ce": 1.0}, {"kd": 0.5, "hint": 0.3, "ce": 0.2},
                                 {"at": 1.0, "ce": 1.0}, {"rkd": 1.0, "kd": 1.0}])
@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_every_loss_trains_cnn_and_mlp_pairs_with_default_paths(img, flat, mix, kind):
    if kind == "cnn":
        data = img
        teacher, student = cnn_pair(data)
    else:
        data = flat
        torch.manual_seed(1)
        teacher = build_model("teacher_mlp", data.input_shape, data.num_classes, hidden=(24, 20))
        student = build_model("mlp", data.input_shape, data.num_classes, hidden=(16, 8))
    result = train(student, data, TrainConfig(epochs=1, loss_weights=mix), teacher=teacher, progress=False)
    row = result.history[0]
    assert all(np.isfinite(row[f"loss_{name}"]) for name in mix)
    summary = result.summary()
    assert summary["loss_weights"] == mix and summary["teachers"]["count"] == 1
    assert summary["teachers"]["outputs"].startswith("cached once in memory")
    if set(mix) & {"hint", "at", "rkd"}:
        assert summary["feature_pairs"] == [["features", "features"]]


def test_hint_adapters_only_when_shapes_differ():
    mix = LossMix({"hint": 1.0}, options={"hint": {"student": ["a", "b"], "teacher": ["x", "y"]}})
    mix.setup({"a": torch.Size([2, 8, 4, 4]), "b": torch.Size([2, 5])},
              {"x": torch.Size([2, 16, 7, 7]), "y": torch.Size([2, 5])})
    adapters = mix.terms["hint"].adapters
    assert isinstance(adapters[0], nn.Conv2d) and adapters[0].in_channels == 8 and adapters[0].out_channels == 16
    assert isinstance(adapters[1], nn.Identity)
    batch = LossInputs(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, 3),
                       {"a": torch.randn(2, 8, 4, 4), "b": torch.randn(2, 5)},
                       {"x": torch.randn(2, 16, 7, 7), "y": torch.randn(2, 5)})
    loss, parts = mix(batch)
    assert loss.requires_grad and parts["hint"] > 0


def test_taps_capture_named_modules():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with FeatureTaps(model, ["0", "2"]) as taps:
        model(torch.zeros(5, 4))
        got = taps.take()
    assert got["0"].shape == (5, 3) and got["2"].shape == (5, 2) and taps.outputs == {}


def test_multi_teacher_combination():
    a = torch.tensor([[4.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 0.1, 0.0]])
    t = 2.0
    fixed = combine_teacher_logits([a, b], [0.75, 0.25], "fixed", t)
    expected = 0.75 * torch.softmax(a / t, 1) + 0.25 * torch.softmax(b / t, 1)
    assert torch.allclose(torch.softmax(fixed / t, 1), expected, atol=1e-6)
    conf = combine_teacher_logits([a, b], [0.5, 0.5], "confidence", t)
    # the confident teacher (a) gets more than its fixed half of the say
    assert torch.softmax(conf / t, 1)[0, 0] > torch.softmax(combine_teacher_logits([a, b], [0.5, 0.5], "fixed", t)
                                                            / t, 1)[0, 0]
    assert combine_teacher_logits([a], [1.0], "fixed", t) is a


def test_multi_teacher_training_and_bad_weights(img):
    teacher, student = cnn_pair(img)
    second = build_model("teacher_cnn", img.input_shape, img.num_classes, widths=(8, 8))
    result = train(student, img, TrainConfig(epochs=1, teacher_combine="confidence", teacher_weights=(2.0, 1.0)),
                   teacher=[teacher, second], progress=False)
    assert result.summary()["teachers"] == {"count": 2, "combine": "confidence", "weights": [2.0, 1.0],
                                            "outputs": result.details["teacher_outputs"]}
    with pytest.raises(EdgekdError, match="2 teacher weights for 1 teachers"):
        train(student, img, TrainConfig(epochs=1, teacher_weights=(1.0, 1.0)), teacher=teacher, progress=False)


def test_schedule_values():
    assert schedule_value(None, 4.0, 0.5) == 4.0
    assert schedule_value({"kind": "linear", "end": 2.0}, 4.0, 0.5) == pytest.approx(3.0)
    cosine = {"kind": "cosine", "start": 8.0, "end": 2.0}
    assert schedule_value(cosine, 4.0, 0.0) == pytest.approx(8.0)
    assert schedule_value(cosine, 4.0, 1.0) == pytest.approx(2.0)
    assert schedule_value(cosine, 4.0, 0.5) == pytest.approx(5.0)


def test_temperature_and_weight_schedules_are_applied(img):
    teacher, student = cnn_pair(img)
    config = TrainConfig(epochs=3, temperature=6.0, temperature_schedule={"kind": "linear", "end": 2.0},
                         loss_weight_schedules={"kd": {"kind": "cosine", "end": 0.1}}, lr_schedule="cosine")
    result = train(student, img, config, teacher=teacher, progress=False)
    assert [h["temperature"] for h in result.history] == pytest.approx([6.0, 4.0, 2.0])
    assert result.history[-1]["loss_weights"]["kd"] == pytest.approx(0.1)
    assert result.summary()["temperature_schedule"] == {"kind": "linear", "end": 2.0}


def test_early_stopping(img):
    teacher, student = cnn_pair(img)
    config = TrainConfig(epochs=6, lr=0.0, lr_schedule="constant", patience=2)  # lr 0: val never improves
    result = train(student, img, config, teacher=teacher, progress=False)
    assert len(result.history) == 3 and result.summary()["early_stopping"]["stopped_early"]


def test_teacher_cache_memmap_matches_memory_and_online_path(img, tmp_path):
    def run(**kw):
        teacher, student = cnn_pair(img)
        cfg = TrainConfig(epochs=2, loss_weights={"kd": 0.5, "hint": 0.3, "ce": 0.2}, **kw)
        return train(student, img, cfg, teacher=teacher, progress=False, cache_dir=tmp_path)

    memory, mapped = run(), run(memmap_threshold_mb=0.0)
    assert "memmap" in mapped.details["teacher_outputs"] and "memory" in memory.details["teacher_outputs"]
    for k, v in memory.model.state_dict().items():
        assert torch.equal(v, mapped.model.state_dict()[k]), k
    assert not any(tmp_path.iterdir())  # the memmap files are removed after training
    online = run(teacher_cache="off")
    assert online.details["teacher_outputs"].startswith("online")
    assert 0 < online.summary()["teacher_time_share"] < 1


def test_transform_runs_teacher_online(img):
    teacher, student = cnn_pair(img)

    def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        mask = torch.rand(x.shape[0], generator=gen) < 0.5
        return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)

    result = train(student, img, TrainConfig(epochs=1), teacher=teacher, progress=False, transform=flip)
    assert result.details["teacher_outputs"].startswith("online")


def test_alone_ignores_teacher_losses(img):
    _, student = cnn_pair(img)
    result = train(student, img, TrainConfig(epochs=1), progress=False)
    assert list(result.history[0]) [:3] == ["epoch", "loss", "loss_ce"]
    assert result.summary()["teachers"]["count"] == 0


RESUME_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    sys.path.insert(0, {repo!r})
    torch.set_num_threads(1)
    from tests.conftest import make_dataset
    from edgekd.distill.trainer import TrainConfig, train
    from edgekd.models.students import build_model

    def run(ckpt, crash_after=None):
        data = make_dataset(n_train=96, shape=(1, 8, 8))
        torch.manual_seed(1)
        teacher = build_model("teacher_cnn", data.input_shape, 3, widths=(8, 16))
        torch.manual_seed(0)
        student = build_model("mobilenetv2", data.input_shape, 3, width=0.25)
        def flip(x, gen):
            return torch.where((torch.rand(x.shape[0], generator=gen) < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
        def crash(epoch, row):
            if epoch == crash_after:
                os._exit(17)
        cfg = TrainConfig(epochs=4, loss_weights={{"kd": 0.5, "hint": 0.3, "ce": 0.2}}, seed=3)
        return train(student, data, cfg, teacher=teacher, progress=False, checkpoint_dir=ckpt,
                     transform=flip, on_epoch_end=crash)

    mode, out = sys.argv[1], sys.argv[2]
    if mode == "crash":
        run(out + "/ckpt", crash_after=2)
    else:
        resumed = run(out + "/ckpt")
        fresh = run(out + "/fresh")
        torch.save({{"resumed": resumed.model.state_dict(), "fresh": fresh.model.state_dict(),
                    "resumed_from": resumed.details["resumed_from_epoch"],
                    "fresh_from": fresh.details["resumed_from_epoch"],
                    "hist": [resumed.history, fresh.history]}}, out + "/states.pt")
""")


def test_kill_and_resume_is_bit_identical(tmp_path):
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT.format(repo=str(REPO)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    crashed = subprocess.run([sys.executable, str(script), "crash", str(tmp_path)], env=env, capture_output=True,
                             text=True, timeout=120)
    assert crashed.returncode == 17, crashed.stderr
    ckpts = list((tmp_path / "ckpt").glob("train-*/checkpoint.pt"))
    assert len(ckpts) == 1 and torch.load(ckpts[0], weights_only=True)["epoch"] == 2
    done = subprocess.run([sys.executable, str(script), "resume", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    states = torch.load(tmp_path / "states.pt", weights_only=True)
    assert states["resumed_from"] == 2 and states["fresh_from"] is None
    for k, v in states["fresh"].items():
        assert torch.equal(v, states["resumed"][k]), k
    assert [h["val_accuracy"] for h in states["hist"][0]] == [h["val_accuracy"] for h in states["hist"][1]]


def test_changed_config_does_not_resume(img, tmp_path):
    teacher, student = cnn_pair(img)
    first = train(student, img, TrainConfig(epochs=1), teacher=teacher, progress=False, checkpoint_dir=tmp_path)
    teacher, student = cnn_pair(img)
    again = train(student, img, TrainConfig(epochs=1), teacher=teacher, progress=False, checkpoint_dir=tmp_path)
    assert again.details["resumed_from_epoch"] == 1  # finished run: nothing left to train
    teacher, student = cnn_pair(img)
    changed = train(student, img, TrainConfig(epochs=1, temperature=2.0), teacher=teacher, progress=False,
                    checkpoint_dir=tmp_path)
    assert changed.details["resumed_from_epoch"] is None
    assert first.details["checkpoint"] != changed.details["checkpoint"]
    assert len(list(tmp_path.glob("train-*"))) == 2


def test_scripted_teacher_features_are_a_clear_error_but_logits_work(img):
    teacher, student = cnn_pair(img)
    scripted = torch.jit.script(teacher.eval())
    with pytest.raises(EdgekdError, match="cannot tap 'features' of the teacher"):
        train(student, img, TrainConfig(epochs=1, loss_weights={"hint": 1.0, "ce": 1.0}), teacher=scripted,
              progress=False)
    assert train(student, img, TrainConfig(epochs=1), teacher=scripted, progress=False).history
