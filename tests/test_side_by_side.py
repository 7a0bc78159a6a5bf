"""Two training runs at once (``edgekd/distill/side_by_side.py``): the same students as one after the other, one
fast plan for both, a failure in either stops the other, the caller's thread count comes back."""

from __future__ import annotations

import functools
import threading

import pytest
import torch

from edgekd.distill import fast, loop
from edgekd.distill.fast import torch_threads
from edgekd.distill.side_by_side import train_side_by_side
from edgekd.distill.trainer import TrainConfig, train
from edgekd.errors import EdgekdError
from edgekd.models.budget import StudentChoice
from edgekd.models.students import build_model
from edgekd.models.teachers import Teacher
from edgekd.stages import distill as distill_stage
from edgekd.stages.context import BuildContext, BuildOptions
from edgekd.stages.teacher import Teachers
from edgekd.targets import load_target
from tests.conftest import make_dataset


@pytest.fixture(scope="module")
def img():
    return make_dataset(n_train=96, shape=(1, 8, 8))


@pytest.fixture
def two_threads():
    with torch_threads(2):
        yield


def student(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("mobilenetv2", (1, 8, 8), 3, width=0.25)


def teacher():
    torch.manual_seed(7)
    return build_model("teacher_resnet", (1, 8, 8), 3, widths=(8, 8), blocks=(1, 1)).eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_side_by_side_trains_the_same_students_as_one_after_the_other(img, two_threads):
    config = TrainConfig(epochs=2, batch_size=16, augment=("flip",))
    t = teacher()
    kd = functools.partial(train, student(), img, config, teacher=t, progress=False)
    alone = functools.partial(train, student(), img, TrainConfig(epochs=2, batch_size=16, label="alone"),
                              progress=False)
    pair = train_side_by_side(kd, alone)
    assert torch.get_num_threads() == 2  # restored after the pair ran with one thread each
    with torch_threads(1):  # the same kernels' thread count, one run after the other
        kd_seq = train(student(), img, config, teacher=t, progress=False)
        alone_seq = train(student(), img, TrainConfig(epochs=2, batch_size=16, label="alone"), progress=False)
    assert same_weights(pair[0].model, kd_seq.model) and same_weights(pair[1].model, alone_seq.model)
    assert pair[0].history[-1]["loss"] == kd_seq.history[-1]["loss"]


def test_the_second_run_trains_with_the_first_runs_fast_plan(img, monkeypatch, two_threads):
    chosen = []
    monkeypatch.setattr(loop, "MIN_STEPS_TO_TUNE", 0)
    monkeypatch.setattr(loop, "choose_plan", lambda *a, **k: chosen.append(1) or fast.plan_for("channels_last"))
    config = TrainConfig(epochs=1, batch_size=16, fast=True)
    first, second = train_side_by_side(functools.partial(train, student(), img, config, progress=False),
                                       functools.partial(train, student(), img, config, progress=False))
    assert len(chosen) == 1  # timed once, by the first run
    assert first.details["optimisations"] == second.details["optimisations"] == ["channels_last"]


class ThreadRecordingTeacher(torch.nn.Module):
    """A teacher that notes, per forward, the batch size and the torch thread count it ran with."""

    def __init__(self) -> None:
        super().__init__()
        self.net, self.calls = teacher(), []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((len(x), torch.get_num_threads()))
        return self.net(x)


def test_the_kd_runs_teacher_pass_gets_all_cores_before_the_other_run_starts(img, two_threads):
    t = ThreadRecordingTeacher()
    calls_when_second_started = []

    def second(**kwargs):
        calls_when_second_started.append(len(t.calls))
        return train(student(), img, TrainConfig(epochs=1, batch_size=16, label="alone"), progress=False, **kwargs)

    config = TrainConfig(epochs=1, batch_size=16)  # no augmentation: the teacher's outputs are cached once
    first, _ = train_side_by_side(functools.partial(train, student(), img, config, teacher=t, progress=False), second)
    cache_pass = [threads for n, threads in t.calls if n > 2]  # the 2-image shape probes aside
    assert cache_pass and set(cache_pass) == {2}  # the caller's two threads, not the run's one
    assert calls_when_second_started == [len(t.calls)]  # the pass was over before the other run began
    assert first.details["teacher_outputs"].startswith("cached once")
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("failing", ["first", "second"])
def test_a_failing_run_stops_the_other_and_its_error_reaches_the_caller(img, failing, two_threads):
    seen: dict[str, int] = {"first": 0, "second": 0}

    def on_epoch_end(name, epoch, row):
        seen[name] = epoch
        if name == failing:
            raise EdgekdError("bad setting", "fix it")

    long = TrainConfig(epochs=200, batch_size=16)
    before = threading.active_count()
    with pytest.raises(EdgekdError, match="bad setting"):
        train_side_by_side(
            functools.partial(train, student(), img, long, progress=False,
                              on_epoch_end=functools.partial(on_epoch_end, "first")),
            functools.partial(train, student(), img, long, progress=False,
                              on_epoch_end=functools.partial(on_epoch_end, "second")))
    other = "second" if failing == "first" else "first"
    assert seen[failing] == 1 and seen[other] < 50  # stopped between batches, not trained to the end
    assert threading.active_count() == before and torch.get_num_threads() == 2


@pytest.mark.parametrize("side_by_side", [True, False])
def test_the_baseline_stage_records_whether_its_runs_trained_side_by_side(img, side_by_side, two_threads, tmp_path):
    ctx = BuildContext(BuildOptions(target="rpi4", baseline=True, progress=False, log=lambda m: None,
                                    side_by_side=side_by_side), load_target("rpi4"), img, tmp_path / "run")
    teachers = Teachers(Teacher(teacher(), "test", "teacher_resnet", "", {}), [], None, 0, 0)
    choice = StudentChoice("mobilenetv2", {"width": 0.25}, 0, 0, 0, 0, 0, 0)
    config = distill_stage.typed_config({"epochs": 1, "batch_size": 32}, "test")
    done = distill_stage.distill(ctx, config, teachers, choice)
    assert done.side_by_side_threads == (1 if side_by_side else None)
    assert done.alone is not None and done.alone.config.label == "student (alone)"
