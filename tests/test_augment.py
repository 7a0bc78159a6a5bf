"""Train-time augmentation (edgekd/distill/augment.py) and the two teaching modes it meets in the trainer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekd.distill.augment import AUGMENTS, View, build_augment, check_augment
from edgekd.distill.losses import LossInputs, LossMix
from edgekd.distill.trainer import TrainConfig, train, validate_config
from edgekd.errors import EdgekdError
from edgekd.models.students import build_model
from tests.conftest import make_dataset

torch.set_num_threads(1)


def _batch(n: int = 8, shape=(3, 8, 8), classes: int = 4):
    g = torch.Generator().manual_seed(123)
    return torch.randn(n, *shape, generator=g), torch.arange(n) % classes


def _aug(names, options=None, is_image=True, classes=4):
    return build_augment(names, options, "cached", is_image=is_image, num_classes=classes)


@pytest.mark.parametrize("names", [["crop"], ["flip"], ["mixup"], ["cutmix"], ["crop", "flip", "mixup"]])
def test_seeded_generator_makes_transforms_deterministic_and_shape_preserving(names):
    x, y = _batch()
    runs = [_aug(names)(x, y, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(runs[0].x, runs[1].x) and torch.equal(runs[0].labels, runs[1].labels)
    assert runs[0].x.shape == x.shape and runs[0].x.dtype == x.dtype
    other = _aug(names)(x, y, torch.Generator().manual_seed(8))
    assert not torch.equal(other.x, runs[0].x)  # the generator, not a global RNG, drives it


def test_crop_shifts_content_and_flip_mirrors():
    x, y = _batch(n=64)
    cropped = _aug(["crop"], {"crop": {"padding": 2}})(x, y, torch.Generator().manual_seed(0)).x
    assert cropped.abs().sum() > 0 and not torch.equal(cropped, x)
    assert _aug(["crop"], {"crop": {"padding": 0}})(x, y, torch.Generator()).x is x
    flipped = _aug(["flip"], {"flip": {"p": 1.0}})(x, y, torch.Generator()).x
    assert torch.equal(flipped, x.flip(-1))


def test_image_only_transforms_refused_on_tables():
    for name in ("flip", "crop", "cutmix"):
        assert AUGMENTS[name].images_only
        with pytest.raises(EdgekdError, match="only for images"):
            _aug([name], is_image=False)
    x = torch.randn(6, 5)
    view = _aug(["mixup"], is_image=False)(x, torch.arange(6) % 4, torch.Generator().manual_seed(0))
    assert view.x.shape == x.shape  # mixup is defined on feature vectors


def test_tabular_build_refuses_flip_before_training():
    table = make_dataset(n_train=32, shape=(5,))
    with pytest.raises(EdgekdError, match="only for images"):
        train(nn.Linear(5, 3), table, TrainConfig(epochs=1, augment=["flip"]), progress=False)


@pytest.mark.parametrize("bad, match", [
    ({"augment": ["rotate"]}, "unknown augmentation"),
    ({"augment": "crop"}, "list of names"),
    ({"augment": ["mixup", "cutmix"]}, "more than one mixing"),
    ({"augment": ["crop"], "augment_options": {"crop": {"size": 3}}}, "no option"),
    ({"augment": ["crop"], "augment_options": {"flip": {}}}, "not in augment"),
    ({"teaching": "sometimes"}, "teaching mode"),
])
def test_bad_settings_are_one_clear_error(bad, match):
    with pytest.raises(EdgekdError, match=match):
        validate_config(TrainConfig(**bad))
    with pytest.raises(EdgekdError, match="alpha"):
        _aug(["mixup"], {"mixup": {"alpha": 0}})


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_mixed_labels_and_cached_teacher_targets_are_consistent(name):
    x, y = _batch(n=16)
    view = _aug([name])(x, y, torch.Generator().manual_seed(3))
    perm, lam = view.mixing
    one_hot = torch.nn.functional.one_hot(y, 4).float()
    assert torch.allclose(view.soft_labels, lam * one_hot + (1 - lam) * one_hot[perm])
    assert torch.allclose(view.soft_labels.sum(1), torch.ones(16))
    assert torch.equal(view.labels, y if lam >= 0.5 else y[perm])  # the dominant sample's class
    if name == "mixup":
        assert torch.allclose(view.x, lam * x + (1 - lam) * x[perm])
    # cached teaching: the un-mixed samples' soft targets are mixed by the same pairs and weight
    logits, temperature = torch.randn(16, 4), 4.0
    (mixed,), _ = view.mix_teacher([logits], {}, temperature)
    p = torch.softmax(logits / temperature, 1)
    assert torch.allclose(torch.softmax(mixed / temperature, 1), lam * p + (1 - lam) * p[perm], atol=1e-6)
    # cross-entropy trains on the mixed targets: lam CE(a) + (1 - lam) CE(b)
    student = torch.randn(16, 4)
    ce, _ = LossMix({"ce": 1.0})(LossInputs(student, view.labels, soft_labels=view.soft_labels))
    ls = torch.log_softmax(student, 1)
    expected = -(lam * ls[torch.arange(16), y] + (1 - lam) * ls[torch.arange(16), y[perm]]).mean()
    assert torch.allclose(ce, expected, atol=1e-6)


def test_no_mixing_leaves_teacher_outputs_alone():
    view = View(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    logits, feats = [torch.randn(2, 3)], {"f": torch.randn(2, 5)}
    assert view.mix_teacher(logits, feats, 4.0) == (logits, feats)


class Spy(nn.Module):
    """A linear model that records the input batches it runs on (a student: only those it trains on)."""

    def __init__(self, features: int, classes: int, seed: int, training_only: bool) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.head = nn.Linear(features, classes)
        self.training_only = training_only
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or not self.training_only:
            self.seen.append(x.detach().clone())
        return self.head(x.flatten(1))


def SpyTeacher(features: int, classes: int) -> Spy:  # noqa: N802 - reads as the class it stands for
    return Spy(features, classes, seed=5, training_only=False)


def SpyStudent(features: int, classes: int) -> Spy:  # noqa: N802
    return Spy(features, classes, seed=0, training_only=True)


@pytest.fixture(scope="module")
def photos():
    return make_dataset(n_train=40, shape=(1, 6, 6), classes=3)


def _run(data, teaching: str, augment=("crop", "flip"), epochs: int = 2):
    teacher, student = SpyTeacher(36, 3), SpyStudent(36, 3)
    config = TrainConfig(epochs=epochs, batch_size=16, augment=list(augment), teaching=teaching)
    result = train(student, data, config, teacher=teacher, progress=False)
    return teacher, student, result


def test_consistent_teaching_runs_the_teacher_on_the_students_view(photos):
    teacher, student, result = _run(photos, "consistent")
    assert result.details["teacher_outputs"].startswith("online")
    taught = teacher.seen[2:]  # after the trainer's two probes (class count, feature shapes)
    assert len(taught) == len(student.seen) == 2 * 3  # 2 epochs x ceil(40 / 16) batches
    for t_in, s_in in zip(taught, student.seen, strict=True):
        assert torch.equal(t_in, s_in)  # the very augmented view
    originals = {tuple(row.flatten().tolist()) for row in torch.from_numpy(photos.x_train)}
    assert any(tuple(row.flatten().tolist()) not in originals for row in student.seen[0])  # it was augmented


def test_cached_teaching_runs_the_teacher_once_per_sample(photos):
    teacher, student, result = _run(photos, "cached", epochs=3)
    assert result.details["teacher_outputs"].startswith("cached")
    cache_pass = torch.cat(teacher.seen[3:])  # after the probes and TeacherCache's 1-sample shape probe
    assert len(cache_pass) == len(photos.y_train)
    assert torch.equal(cache_pass, torch.from_numpy(photos.x_train))  # un-augmented inputs, each once
    assert len(student.seen) == 3 * 3


def test_alone_gets_the_same_augmentation_and_default_path_is_unchanged(photos):
    def student_views(augment):
        student = SpyStudent(36, 3)
        train(student, photos, TrainConfig(epochs=1, batch_size=16, augment=augment), progress=False)
        return student.seen

    augmented, plain = student_views(["flip", "crop"]), student_views([])
    assert any(not torch.equal(a, p) for a, p in zip(augmented, plain, strict=True))
    again = student_views([])
    assert all(torch.equal(a, b) for a, b in zip(plain, again, strict=True))


def test_mixup_with_cached_teaching_trains_a_cnn(photos):
    torch.manual_seed(1)
    teacher = build_model("teacher_cnn", photos.input_shape, 3, widths=(4, 8))
    torch.manual_seed(0)
    student = build_model("mobilenetv2", photos.input_shape, 3, width=0.25)
    config = TrainConfig(epochs=1, batch_size=16, augment=["crop", "mixup"], teaching="cached",
                         loss_weights={"dkd": 0.5, "hint": 0.2, "ce": 0.3})
    result = train(student, photos, config, teacher=teacher, progress=False)
    assert result.summary()["augment"] == {"transforms": ["crop", "mixup"], "options": {}, "teaching": "cached"}
    assert torch.isfinite(torch.tensor(result.history[0]["loss"]))


def test_check_augment_accepts_registered_names():
    check_augment(["crop", "flip", "mixup"], {"mixup": {"alpha": 0.4}}, "consistent")
    validate_config(TrainConfig(augment=("cutmix",), augment_options={"cutmix": {"alpha": 1.0}}))


@pytest.mark.parametrize("flags, message", [
    (["--augment", "flip"], "only for images"),
    (["--augment", "crop,rotate"], "unknown augmentation"),
])
def test_cli_refuses_bad_augmentation_before_training(tmp_path, capsys, flags, message):
    from edgekd.cli import main
    from tests.data_makers import fraud_table, write_csv

    x, y = fraud_table(n=120, features=4)
    table = write_csv(tmp_path / "table.csv", ["a", "b", "c", "d", "y"],
                      [[*(f"{v:.4f}" for v in row), int(label)] for row, label in zip(x, y, strict=True)])
    out = tmp_path / "run"
    assert main(["build", "--target", "x86-cpu", "--data", str(table), "--label-column", "y", *flags,
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "fix:" in err
    assert not out.exists()
