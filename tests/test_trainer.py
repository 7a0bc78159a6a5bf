"""The trainer's pieces (loop.py), typed TrainConfig, the CPU fast path, resume of both build runs, progress output,
and the default teacher's cache key. Small data, a few seconds in all."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from edgekd.distill import fast, loop
from edgekd.distill.trainer import TrainConfig, train
from edgekd.errors import EdgekdError
from edgekd.models.budget import StudentChoice
from edgekd.models.students import build_model
from edgekd.models.teachers import Teacher, default_teacher_arch
from edgekd.progress import Progress
from edgekd.stages import distill as distill_stage
from edgekd.stages import teacher as teacher_stage
from edgekd.stages.context import BuildContext, BuildOptions
from edgekd.stages.teacher import (
    DEFAULT_TEACHER_AUGMENT,
    Teachers,
    cached_teacher_path,
    default_teacher_model,
    epochs_for,
    teacher_cache_key,
    teacher_config,
)
from edgekd.targets import load_target
from tests.conftest import make_dataset

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def img():
    return make_dataset(n_train=64, shape=(1, 8, 8))


def student(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("mobilenetv2", (1, 8, 8), 3, width=0.25)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------- the split pieces
def test_record_epoch_keeps_later_ties_and_counts_patience(img):
    run = loop.make_run(student(), img, TrainConfig(epochs=5, patience=2), [], None)
    state = loop.State(best_state=loop.snapshot(run.model))
    for epoch, acc in enumerate([0.5, 0.5, 0.4, 0.4], start=1):
        loop.record_epoch(run, state, {"epoch": epoch, "val_accuracy": acc})
    assert state.best_epoch == 2 and state.best_acc == 0.5  # tie: the later epoch
    assert state.since_best == 3 and state.stopped


def test_gains_under_min_delta_neither_move_the_best_nor_reset_patience_but_add_up(img):
    """Keras' rule: the best moves only on a gain above min_delta, so small gains add up against it (a creeping
    climb resets patience) and a run stopped by patience never has its best epoch last."""
    run = loop.make_run(student(), img, TrainConfig(epochs=20, patience=3, min_delta=0.01), [], None)
    state = loop.State(best_state=loop.snapshot(run.model))
    for epoch, acc in enumerate([0.5, 0.506, 0.512, 0.518, 0.519, 0.52, 0.521, 0.5215], start=1):
        loop.record_epoch(run, state, {"epoch": epoch, "val_accuracy": acc})
        assert state.best_epoch < epoch or state.since_best == 0
    assert state.best_epoch == 3 and state.best_acc == 0.512  # 0.512 > 0.5 + 0.01: the creep counted once
    assert state.since_best == 5 and state.stopped and state.best_epoch < len(state.history)


def test_train_step_and_epoch_pieces_match_train(img):
    config = TrainConfig(epochs=1, batch_size=16)
    run = loop.make_run(student(), img, config, [], None)
    loop.probe_shapes(run)
    loop.make_optimisation(run)
    state = loop.resume(run, None, "")
    assert state.ckpt is None and state.start_epoch == 0
    seen = []
    row = loop.run_epoch(run, state, 0, on_batch=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (64, 64) and len(seen) == 4
    whole = train(student(), img, config, progress=False)
    assert row["loss"] == pytest.approx(whole.history[0]["loss"])
    assert same_weights(run.model, whole.model) or state.best_epoch == whole.best_epoch


def test_train_keeps_transform_parameter(img):
    calls = []

    def flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        calls.append(x.shape[0])
        return x.flip(-1)

    teacher = build_model("teacher_resnet", (1, 8, 8), 3, widths=(8, 8), blocks=(1, 1))
    result = train(student(), img, TrainConfig(epochs=1, batch_size=32), teacher=teacher, progress=False,
                   transform=flip)
    assert sum(calls) == 64 and result.details["teacher_outputs"].startswith("online")


# ---------------------------------------------------------------------------------------------- typed config
def test_train_config_is_typed():
    with pytest.raises(pydantic.ValidationError, match="epochs"):
        TrainConfig(epochs="many")
    with pytest.raises(pydantic.ValidationError):
        TrainConfig(no_such_field=1)
    assert TrainConfig(teacher_weights=[1, 2]).teacher_weights == (1.0, 2.0)
    assert dataclasses.replace(TrainConfig(), label="x").label == "x"


@pytest.mark.parametrize(("fields", "name"), [({"epochs": "ten"}, "epochs"), ({"lr": [1]}, "lr"),
                                               ({"loss_weights": {"kd": "heavy"}}, "loss_weights.kd"),
                                               ({"patience": 1.5}, "patience")])
def test_distill_config_wrong_type_is_one_message_naming_the_field(fields, name):
    with pytest.raises(EdgekdError, match=f"--distill-config: field '{name}'") as info:
        distill_stage.typed_config({"epochs": 1, **fields}, "--distill-config")
    assert "\n" not in info.value.problem and info.value.fix.startswith("give '" + name)


def test_cli_distill_config_wrong_type_exits_2(tmp_path):
    cfg = tmp_path / "kd.yaml"
    cfg.write_text("patience: soon\n")
    proc = subprocess.run([sys.executable, "-m", "edgekd", "build", "--target", "rpi4", "--data", "digits",
                           "--distill-config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "field 'patience'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------- fast path
def test_choose_plan_leaves_model_and_rng_untouched(img):
    model = student()
    before = loop.snapshot(model)
    rng = torch.get_rng_state()
    x, y = torch.from_numpy(img.x_train[:16]), torch.from_numpy(img.y_train[:16])
    plan = fast.choose_plan(model, x, y, torch.device("cpu"), seconds=0.01, rounds=1)
    assert plan.name in fast.CANDIDATES and set(plan.samples_per_s) == set(fast.candidates(x, torch.device("cpu")))
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert fast.FastPlan.from_state(plan.to_state()) == plan


@pytest.mark.parametrize(("rate", "chosen"), [
    ({"eager": 100, "channels_last": 158, "channels_last+bf16": 170}, "channels_last"),  # a near-tie: fewer changes
    ({"eager": 100, "channels_last": 150, "channels_last+bf16": 300}, "channels_last+bf16"),
    ({"eager": 100, "channels_last": 105, "channels_last+bf16": 108}, "eager"),  # nothing beats eager by 10 %
    ({"eager": 100, "bf16": 120}, "bf16"),
])
def test_the_plan_is_the_simplest_within_min_gain_of_the_fastest(rate, chosen):
    assert fast.simplest_within(rate, list(rate), 1.1) == chosen


@pytest.mark.parametrize("name", ["channels_last", "channels_last+bf16"])
def test_fast_plan_is_recorded_reused_and_resumed(img, tmp_path, monkeypatch, name):
    if "bf16" in name and not fast.cpu_bf16():
        pytest.skip("this CPU has no bf16")
    monkeypatch.setattr(fast, "choose_plan", lambda *a, **k: fast.plan_for(name))
    monkeypatch.setattr(loop, "choose_plan", lambda *a, **k: fast.plan_for(name))
    monkeypatch.setattr(loop, "MIN_STEPS_TO_TUNE", 0)
    config = TrainConfig(epochs=2, batch_size=32, fast=True)
    result = train(student(), img, config, progress=False, checkpoint_dir=tmp_path)
    assert result.details["optimisations"] == name.split("+") and result.summary()["optimisations"]
    # trained channels_last, handed back in the default format: exporters (litert-torch) mis-convert channels_last
    assert all(p.is_contiguous() for p in result.model.parameters())
    assert np.isfinite(result.history[-1]["loss"])
    monkeypatch.setattr(loop, "choose_plan", lambda *a, **k: fast.plan_for("eager"))
    again = train(student(), img, config, progress=False, checkpoint_dir=tmp_path)
    assert again.details["resumed_from_epoch"] == 2 and again.details["optimisations"] == name.split("+")
    reused = train(student(), img, dataclasses.replace(config, seed=1), progress=False,
                   fast_plan=result.details["fast_plan"])
    assert reused.details["optimisations"] == name.split("+")


def test_fast_off_and_short_runs_train_as_before(img):
    plain = train(student(), img, TrainConfig(epochs=1), progress=False)
    short = train(student(), img, TrainConfig(epochs=1, fast=True), progress=False)  # 2 steps: not worth timing
    assert short.details["optimisations"] == [] and same_weights(plain.model, short.model)


# ---------------------------------------------------------------------------------------------- resume, both runs
class Crash(Exception):
    pass


@pytest.mark.parametrize("side_by_side", [False, True])
def test_build_resumes_kd_and_alone_runs_mid_way(img, tmp_path, monkeypatch, side_by_side):
    ctx = BuildContext(BuildOptions(target="rpi4", baseline=True, progress=False, log=lambda m: None,
                                    side_by_side=side_by_side), load_target("rpi4"), img, tmp_path / "run")
    monkeypatch.setattr(distill_stage, "threads_per_run", lambda: 1)  # this module runs torch on one thread
    torch.manual_seed(5)
    teacher = build_model("teacher_resnet", (1, 8, 8), 3, widths=(8, 8), blocks=(1, 1))
    teachers = Teachers(Teacher(teacher, "test", "teacher_resnet", "", {}), [], None, 0, 0)
    choice = StudentChoice("mobilenetv2", {"width": 0.25}, 0, 0, 0, 0, 0, 0)
    config = distill_stage.typed_config({"epochs": 3, "batch_size": 32}, "test")
    real_train = distill_stage.train

    def crashing(*args, crash_at, **kwargs):
        def stop(epoch, row):
            if args[2].label == "student (alone)" and epoch == crash_at:
                raise Crash
        return real_train(*args, on_epoch_end=stop, **kwargs)

    monkeypatch.setattr(distill_stage, "train", lambda *a, **k: crashing(*a, crash_at=2, **k))
    with pytest.raises(Crash):
        distill_stage.distill(ctx, config, teachers, choice)
    monkeypatch.setattr(distill_stage, "train", lambda *a, **k: crashing(*a, crash_at=None, **k))
    resumed = distill_stage.distill(ctx, config, teachers, choice)
    assert resumed.alone.details["resumed_from_epoch"] == 2  # killed after epoch 2: resumes mid-way
    if not side_by_side:  # finished before the kill: nothing retrained (side by side it was stopped where it was)
        assert resumed.kd.details["resumed_from_epoch"] == 3
    fresh = distill_stage.distill(dataclasses.replace(ctx, options=dataclasses.replace(ctx.options, resume=False)),
                                  config, teachers, choice)
    assert same_weights(resumed.alone.model, fresh.alone.model) and same_weights(resumed.kd.model, fresh.kd.model)


@pytest.mark.parametrize("cached", [True, False])
def test_a_killed_default_teacher_resumes_mid_way_and_its_checkpoints_go_once_cached(img, tmp_path, monkeypatch,
                                                                                      cached):
    """The teacher checkpoints beside its cache entry (any later run on this data resumes it), else in the run's
    own checkpoints; a resumed teacher ends with a fresh one's weights."""
    options = BuildOptions(target="rpi4", progress=False, log=lambda m: None, teacher_arch="teacher_resnet",
                           teacher_config={"widths": (8, 8), "blocks": (1, 1)},
                           teacher_cache=tmp_path / "cache" if cached else None)
    ctx = BuildContext(options, load_target("rpi4"), img, tmp_path / "run")
    real_train = teacher_stage.train

    def crashing(*args, crash_at, **kwargs):
        def stop(epoch, row):
            if epoch == crash_at:
                raise Crash
        return real_train(*args, on_epoch_end=stop, **kwargs)

    monkeypatch.setattr(teacher_stage, "train", lambda *a, **k: crashing(*a, crash_at=2, **k))
    with pytest.raises(Crash):
        teacher_stage.prepare_teacher(ctx, 3)
    partial = list((tmp_path / "cache" / "teachers").glob("*.partial")) if cached else [ctx.checkpoint_dir]
    assert len(partial) == 1 and list(partial[0].rglob("checkpoint.pt"))
    monkeypatch.setattr(teacher_stage, "train", lambda *a, **k: crashing(*a, crash_at=None, **k))
    resumed, training = teacher_stage.prepare_teacher(ctx, 3)
    assert training.details["resumed_from_epoch"] == 2
    if cached:
        assert not partial[0].exists() and len(list((tmp_path / "cache" / "teachers").glob("*.pt"))) == 1
    fresh_options = dataclasses.replace(options, resume=False, teacher_cache=None)
    fresh, _ = teacher_stage.prepare_teacher(dataclasses.replace(ctx, options=fresh_options), 3)
    assert same_weights(resumed.model, fresh.model)


# ---------------------------------------------------------------------------------------------- progress
def test_progress_writes_a_few_lines_per_epoch_off_a_tty():
    out = io.StringIO()
    bar = Progress("train x", epochs=2, stream=out, lines_per_epoch=2, tty=False)
    for epoch in (1, 2):
        bar.start_epoch(epoch, 60_000)
        for done in range(64, 60_001, 64):
            bar.update(done, 60_000)
        bar.update(60_000, 60_000)
        bar.end_epoch({"epoch": epoch, "loss": 0.5, "val_accuracy": 0.9, "epoch_time_s": 1.0}, 0.9)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 * 3 and sum("val 0.9000" in line for line in lines) == 2
    silent = io.StringIO()
    Progress("x", 1, enabled=False, stream=silent, tty=False).update(5, 10)
    assert silent.getvalue() == ""


# ---------------------------------------------------------------------------------------------- default teacher
def test_default_teacher_epochs_sized_to_the_data_and_to_a_longer_student():
    assert epochs_for(BuildOptions(target="t"), 60_000) == (6, 8)
    assert epochs_for(BuildOptions(target="t"), 3_000) == (40, 40)
    assert epochs_for(BuildOptions(target="t", epochs=20), 60_000) == (20, 20)
    assert epochs_for(BuildOptions(target="t", epochs=2), 60_000) == (6, 2)
    assert epochs_for(BuildOptions(target="t", epochs=20, teacher_epochs=3), 60_000) == (3, 20)


@pytest.mark.parametrize(("shape", "arch"), [((1, 28, 28), "teacher_cnn"), ((3, 32, 32), "teacher_cnn"),
                                             ((1, 8, 8), "teacher_resnet"), ((3, 224, 224), "teacher_resnet"),
                                             ((3, 40, 27), "teacher_resnet"), ((64,), "teacher_mlp")])
def test_the_default_teacher_is_sized_to_the_data(shape, arch):
    assert default_teacher_arch(shape) == arch
    assert build_model(arch, shape, 10)(torch.zeros(2, *shape)).shape == (2, 10)


def test_the_default_teachers_augmentation_is_a_switch():
    assert teacher_config(BuildOptions(target="t"), 4).augment == DEFAULT_TEACHER_AUGMENT == ()
    assert teacher_config(BuildOptions(target="t", teacher_augment=("crop",)), 4).augment == ("crop",)


def test_teacher_cache_key_covers_labels_config_and_versions(img):
    model = build_model("teacher_resnet", (1, 8, 8), 3)
    config = teacher_config(BuildOptions(target="t"), 4)
    base = teacher_cache_key(img, "teacher_resnet", config, model)
    relabelled = dataclasses.replace(img, y_train=np.roll(img.y_train, 1))
    assert teacher_cache_key(relabelled, "teacher_resnet", config, model) != base
    assert teacher_cache_key(img, "teacher_resnet", teacher_config(BuildOptions(target="t"), 5), model) != base
    slow = teacher_config(BuildOptions(target="t", fast_train=False), 4)
    assert teacher_cache_key(img, "teacher_resnet", slow, model) != base
    shifted = teacher_config(BuildOptions(target="t", teacher_augment=("crop",)), 4)
    assert teacher_cache_key(img, "teacher_resnet", shifted, model) != base
    assert '"torch": "' + torch.__version__ in base and '"edgekd": ' in base


def test_teacher_arch_without_a_file_names_the_default_teacher_to_train(img):
    arch, model = default_teacher_model(BuildOptions(target="t"), img)
    assert arch == "teacher_resnet" and model.training
    opts = BuildOptions(target="t", teacher_arch="teacher_cnn", teacher_config={"widths": [8, 16]})
    arch, model = default_teacher_model(opts, img)
    assert arch == "teacher_cnn" and model.classifier.in_features == 16
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    # its widths are in the cache key (every parameter's shape), so a resized teacher is trained, not reused
    wide = default_teacher_model(BuildOptions(target="t", teacher_arch="teacher_cnn"), img)[1]
    config = teacher_config(opts, 4)
    assert teacher_cache_key(img, arch, config, model) != teacher_cache_key(img, arch, config, wide)


@pytest.mark.parametrize(("arch", "config", "named"), [
    ("torchvision:resnet18", {}, "trains only its own architectures"),
    ("teacher_nope", {}, "unknown architecture 'teacher_nope'"),
    ("teacher_cnn", {"depth": 3}, "cannot take inputs of shape (1, 8, 8)"),
])
def test_a_default_teacher_it_cannot_train_is_bad_input(img, arch, config, named):
    with pytest.raises(EdgekdError, match=re.escape(named)):
        default_teacher_model(BuildOptions(target="t", teacher_arch=arch, teacher_config=config), img)


def test_cli_teacher_arch_it_cannot_train_exits_2_before_training(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgekd", "build", "--target", "rpi4", "--data", "digits",
                           "--teacher-arch", "teacher_cnn", "--teacher-config", '{"widths": 64}',
                           "--out", str(tmp_path / "run"), "--no-progress", "--no-cache"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--teacher-arch teacher_cnn" in proc.stderr and "Traceback" not in proc.stderr
    assert "training" not in proc.stdout and not (tmp_path / "run").exists()


def test_teacher_cache_dir_is_private_and_others_writable_is_refused(tmp_path):
    path = cached_teacher_path(tmp_path / "cache", "key")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(EdgekdError, match="can be written by other users"):
        cached_teacher_path(shared, "key")


# ---------------------------------------------------------------------------------------------- devices
def _all_on_cpu(module: torch.nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in [*module.parameters(), *module.buffers()])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_models_end_on_the_cpu_after_training(img, device):
    """MAC counting, teacher logits and export feed CPU tensors: a CUDA build must hand back CPU models."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine (run with the device tool where one is lent)")
    teacher = build_model("teacher_resnet", (1, 8, 8), 3, widths=(8, 8), blocks=(1, 1))
    config = TrainConfig(epochs=1, batch_size=32, device=device)
    result = train(student(), img, config, teacher=teacher, progress=False)
    assert result.details["device"].startswith(device)
    assert _all_on_cpu(result.model) and _all_on_cpu(teacher)


def test_a_channels_last_trained_teacher_exports_to_tflite_with_parity(img, monkeypatch):
    """The bug a Fashion-MNIST rpi4 build hit: teacher_resnet trained channels_last, TFLite max|diff| 20."""
    pytest.importorskip("litert_torch")
    from edgekd.formats import get_backend
    from edgekd.runner import load_session

    monkeypatch.setattr(loop, "choose_plan", lambda *a, **k: fast.plan_for("channels_last"))
    monkeypatch.setattr(loop, "MIN_STEPS_TO_TUNE", 0)
    teacher = build_model("teacher_resnet", (1, 8, 8), 3, widths=(8, 16), blocks=(1, 1))
    result = train(teacher, img, TrainConfig(epochs=1, batch_size=32, fast=True), progress=False)
    trained = result.model
    assert result.details["optimisations"] == ["channels_last"]
    assert all(p.is_contiguous() for p in trained.parameters())  # dense 3x3 convs: channels_last would differ
    x = img.x_val[:16]
    with torch.no_grad():
        reference = trained(torch.from_numpy(x)).numpy()
    artifact = get_backend("tflite").export(trained, x[:1], Path(tempfile.mkdtemp()) / "t.tflite", "fp32", None)
    out = load_session(str(artifact.path), 1, "fp32").run_batched(x)
    assert np.abs(out - reference).max() < 1e-3
