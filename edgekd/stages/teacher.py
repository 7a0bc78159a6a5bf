"""Stage: the teacher(s) — the user's files, or a default teacher trained here and cached."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd import __version__
from edgekd import distributed as ranks
from edgekd.data.cache import cache_entry, private_dir
from edgekd.distill.trainer import TrainConfig, TrainResult, train
from edgekd.errors import EdgekdError
from edgekd.io import atomic_write
from edgekd.models.arch_libraries import split_arch
from edgekd.models.budget import count_macs, count_params
from edgekd.models.students import ARCHITECTURES, build_model
from edgekd.models.teachers import (
    Teacher,
    default_teacher_arch,
    load_teacher,
)
from edgekd.stages.context import BuildContext
from edgekd.text.students import default_teacher, load_text_teacher


@dataclass
class Teachers:
    """The primary teacher (measured and reported), any extra ones for multi-teacher KD, and their cost."""

    primary: Teacher
    extra: list[nn.Module]
    training: TrainResult | None  # when edgekd trained the default teacher in this build
    macs: int
    params: int

    @property
    def models(self) -> list[nn.Module]:
        return [self.primary.model, *self.extra]

    @property
    def for_training(self) -> nn.Module | list[nn.Module]:
        return self.models if self.extra else self.primary.model


def auto_epochs(n_train: int) -> tuple[int, int]:
    """(teacher, student) epochs: many passes over a small set, few over a large one.

    On a large set the default teacher gets 6, the recipe of the eager build before issue 16 (teacher_cnn, 6 epochs;
    not tuned since): on Fashion-MNIST (54,000 training images, rpi4 --baseline, benchmarks/results/build_time.json
    "avx2-teacher-cnn-6-epochs") its KD student reached 0.9420 / 0.9405 on validation over 2 seeds; two more
    teacher epochs would cost ~700 s on a 2-core AVX2 host.
    """
    if n_train <= 5_000:
        return 40, 40
    if n_train <= 20_000:
        return 15, 15
    return 6, 8


def epochs_for(options, n_train: int) -> tuple[int, int]:
    """(teacher, student) epochs from the flags, else sized to the data. A student trained longer by ``--epochs``
    gets a teacher trained at least as long: a half-trained teacher caps what KD can teach."""
    auto_teacher, auto_student = auto_epochs(n_train)
    student = options.epochs or auto_student
    return options.teacher_epochs or max(auto_teacher, options.epochs or 0), student


# The default teacher trains on the images as they are. Measured on Fashion-MNIST (all 54,000 training images,
# 8 epochs, benchmarks/results/build_time.json): with random crop the teacher scored 0.9354 on the test split
# (AMD host, "resnet-student-crop-teacher"), without it 0.9345 (Intel host, "new") — within the noise of 10,000
# test images, for a longer epoch; so crop stays a choice (--teacher-augment crop), not the default. A mirror would
# be wrong for digits and text anyway.
DEFAULT_TEACHER_AUGMENT: tuple[str, ...] = ()


def teacher_config(options, epochs: int) -> TrainConfig:
    augment = DEFAULT_TEACHER_AUGMENT if options.teacher_augment is None else options.teacher_augment
    return TrainConfig(epochs=epochs, seed=options.seed, label="teacher", fast=options.fast_train,
                       augment=tuple(augment))


def teacher_cache_key(data, arch: str, config: TrainConfig, model: nn.Module) -> str:
    """Everything that shapes a trained default teacher: a change to any one retrains instead of reusing.

    edgekd and torch versions (training code and kernels), the whole training config, the architecture with every
    parameter's shape, and the data: its fingerprint, split shapes, classes and a hash of every split's labels.
    """
    labels = hashlib.sha256(b"".join(np.ascontiguousarray(y).astype(np.int64).tobytes()
                                     for y in (data.y_train, data.y_val, data.y_test))).hexdigest()
    cfg = {k: v for k, v in dataclasses.asdict(config).items() if k != "label"}
    return json.dumps({
        "edgekd": __version__, "torch": torch.__version__, "arch": arch, "config": cfg,
        "shapes": [[name, list(p.shape)] for name, p in model.state_dict().items()],
        "data": {"fingerprint": data.fingerprint(), "input_shape": list(data.input_shape),
                 "classes": int(data.num_classes), "labels_sha256": labels,
                 "splits": [list(np.shape(a)) for a in (data.x_train, data.x_val, data.x_test)]},
    }, sort_keys=True, default=str)


def cached_teacher_path(cache_dir: Path, key: str) -> Path:
    """``<cache>/teachers/teacher-<hash>.pt`` in a directory only this user can write (0700; others refused)."""
    name = f"teacher-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    return cache_entry(Path(cache_dir), "teachers", name, what="teacher cache")


def prepare_teachers(ctx: BuildContext, epochs: int) -> Teachers:
    o, data = ctx.options, ctx.data
    teacher, training = prepare_teacher(ctx, epochs)
    extra = [load_user_teacher(ctx, path).model for path in o.extra_teachers]
    if "macs" in teacher.config and "params" in teacher.config:  # a teacher outside PyTorch counted its graph
        return Teachers(teacher, extra, training, int(teacher.config["macs"]), int(teacher.config["params"]))
    return Teachers(teacher, extra, training, count_macs(teacher.model, data.input_shape),
                    count_params(teacher.model))


def load_user_teacher(ctx: BuildContext, path: str) -> Teacher:
    """The user's teacher file, loaded (and safety-checked) once per build: the student stage needs its MACs
    before the teacher stage needs its weights."""
    if path in ctx.loaded_teachers:
        return ctx.loaded_teachers[path]
    o, data = ctx.options, ctx.data
    if data.is_text and Path(path).is_dir():  # a Hugging Face model directory

        teacher = load_text_teacher(path, data)
    else:
        teacher = load_teacher(path, data.input_shape, data.num_classes, o.teacher_arch, o.teacher_config,
                               o.trust_pickle, data.normalization, data.classes)
    ctx.say(f"teacher: {teacher.description}" + (f" ({teacher.config.get('output')}, reads "
                                                  f"{teacher.config.get('reads')})" if "reads" in teacher.config
                                                 else ""))
    ctx.loaded_teachers[path] = teacher
    return teacher


def prepare_teacher(ctx: BuildContext, epochs: int) -> tuple[Teacher, TrainResult | None]:
    """The user's teacher, or a default one trained here (cached by data, architecture, epochs and seed).

    Under torchrun rank 0 reads and writes the cache (its weights reach the other ranks in ``from_main``), and
    all the ranks train a teacher that is not cached, data-parallel.
    """
    options, data = ctx.options, ctx.data
    if options.teacher:
        return load_user_teacher(ctx, options.teacher), None
    torch.manual_seed(options.seed)
    arch, model = default_teacher_model(options, data)
    config = teacher_config(options, epochs)
    cache = None
    if options.teacher_cache is not None:
        cache, weights = ranks.from_main(lambda: cached_teacher(ctx, arch, config, model))
        if weights is not None:
            model.load_state_dict(weights)  # rank 0's model has them already
            model.eval()
            ctx.say(f"teacher: default '{arch}' loaded from cache {cache} (trained earlier on this data)")
            return Teacher(model, "trained-default (cached)", arch, f"default {arch}, cached at {cache}",
                           dict(options.teacher_config)), None
    ctx.say(f"teacher: none given, training the default '{arch}' on {data.name} for {epochs} epochs")
    checkpoints = teacher_checkpoint_dir(ctx, cache)
    result = train(model, data, config, progress=options.progress, checkpoint_dir=checkpoints)
    if result.details.get("resumed_from_epoch"):
        ctx.say(f"teacher: resumed from epoch {result.details['resumed_from_epoch']} ({checkpoints})")
    if cache is not None and ranks.is_main():
        atomic_write(cache, lambda p: torch.save(result.model.state_dict(), p))
        shutil.rmtree(checkpoints, ignore_errors=True)  # cached: nothing left to resume
    return Teacher(result.model, "trained-default", arch, f"default {arch} trained by edgekd",
                   dict(options.teacher_config)), result


def teacher_checkpoint_dir(ctx: BuildContext, cache: Path | None) -> Path | None:
    """Where the default teacher checkpoints each epoch, so a killed build or benchmark resumes it instead of
    training it again: beside its cache entry (``teacher-<hash>.partial/``, private like the cache, so any later build
    on this data resumes it), else the run's own checkpoints; None with ``--no-resume``."""
    if not ctx.options.resume:
        return None
    if cache is None:
        return ctx.checkpoint_dir
    return ranks.from_main(lambda: private_dir(cache.with_suffix(".partial"), "teacher cache"))


def cached_teacher(ctx: BuildContext, arch: str, config: TrainConfig, model: nn.Module) -> tuple[Path, dict | None]:
    """Where this teacher is cached, and its weights (loaded into ``model``) when a readable entry is there."""
    cache = cached_teacher_path(ctx.options.teacher_cache, teacher_cache_key(ctx.data, arch, config, model))
    if not cache.exists():
        return cache, None
    try:
        weights = torch.load(cache, map_location="cpu", weights_only=True)
        model.load_state_dict(weights)
        return cache, weights
    except Exception as exc:  # noqa: BLE001 - a bad cache entry is retrained, never fatal
        ctx.say(f"teacher: ignoring unreadable cache {cache} ({type(exc).__name__}); retraining")
        return cache, None


def default_teacher_model(options, data) -> tuple[str, nn.Module]:
    """The untrained teacher edgekd trains when the user gives no file: ``--teacher-arch`` (an edgekd architecture,
    with ``--teacher-config``) or the default for the data. Anything that cannot take the data is bad input, found
    before any training (the student stage builds this first, for its MACs)."""
    if data.is_text and not options.teacher_arch:
        return default_teacher(data)
    arch = options.teacher_arch or default_teacher_arch(data.input_shape)
    if split_arch(arch) is not None:
        raise EdgekdError(f"--teacher-arch {arch} without --teacher: edgekd trains only its own architectures from "
                          "scratch (a torchvision/timm one needs its pretrained weights)",
                          "give the weights with --teacher FILE, or name an edgekd architecture "
                          f"({', '.join(teacher_architectures())})")
    try:
        model = build_model(arch, data.input_shape, data.num_classes, **options.teacher_config)
        with torch.no_grad():
            model.eval()(torch.zeros(2, *data.input_shape))
    except EdgekdError:
        raise
    except Exception as exc:  # noqa: BLE001 - a config or shape the architecture refuses is the user's choice
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise EdgekdError(f"--teacher-arch {arch} with --teacher-config {json.dumps(options.teacher_config)} "
                          f"cannot take inputs of shape {tuple(data.input_shape)}: {first}",
                          f"pick an architecture for this data (default: {default_teacher_arch(data.input_shape)}) "
                          "and only the keyword arguments its builder takes") from None
    return arch, model.train()


def teacher_architectures() -> list[str]:
    """The edgekd architectures meant as teachers (``teacher_*``)."""
    return sorted(name for name in ARCHITECTURES if name.startswith("teacher_"))
