"""Stage: the teacher(s) — the user's files, or a default teacher trained here and cached."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgekd.distill.trainer import TrainConfig, TrainResult, train
from edgekd.io import atomic_write
from edgekd.models.budget import count_macs, count_params
from edgekd.models.students import build_model
from edgekd.models.teachers import (
    Teacher,
    cached_teacher_path,
    default_teacher_arch,
    load_teacher,
    teacher_cache_key,
)
from edgekd.stages.context import BuildContext


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
    """(teacher, student) epochs: many passes over a small set, few over a large one."""
    if n_train <= 5_000:
        return 30, 40
    if n_train <= 20_000:
        return 12, 15
    return 6, 8


def prepare_teachers(ctx: BuildContext, epochs: int) -> Teachers:
    o, data = ctx.options, ctx.data
    teacher, training = prepare_teacher(ctx, epochs)
    extra = [_load(ctx, path).model for path in o.extra_teachers]
    if "macs" in teacher.config and "params" in teacher.config:  # a teacher outside PyTorch counted its graph
        return Teachers(teacher, extra, training, int(teacher.config["macs"]), int(teacher.config["params"]))
    return Teachers(teacher, extra, training, count_macs(teacher.model, data.input_shape),
                    count_params(teacher.model))


def _load(ctx: BuildContext, path: str) -> Teacher:
    o, data = ctx.options, ctx.data
    teacher = load_teacher(path, data.input_shape, data.num_classes, o.teacher_arch, o.teacher_config,
                           o.trust_pickle, data.normalization, data.classes)
    ctx.say(f"teacher: {teacher.description}" + (f" ({teacher.config.get('output')}, reads "
                                                  f"{teacher.config.get('reads')})" if "reads" in teacher.config
                                                 else ""))
    return teacher


def prepare_teacher(ctx: BuildContext, epochs: int) -> tuple[Teacher, TrainResult | None]:
    """The user's teacher, or a default one trained here (cached by data, architecture, epochs and seed)."""
    options, data = ctx.options, ctx.data
    if options.teacher:
        return _load(ctx, options.teacher), None
    arch = default_teacher_arch(data.input_shape)
    torch.manual_seed(options.seed)
    model = build_model(arch, data.input_shape, data.num_classes)
    cache = None
    if options.teacher_cache is not None:
        cache = cached_teacher_path(options.teacher_cache,
                                    teacher_cache_key(data.fingerprint(), arch, epochs, options.seed, model))
        if cache.exists():
            try:
                model.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
                model.eval()
                ctx.say(f"teacher: default '{arch}' loaded from cache {cache} (trained earlier on this data)")
                return Teacher(model, "trained-default (cached)", arch, f"default {arch}, cached at {cache}", {}), None
            except Exception as exc:  # noqa: BLE001 - a bad cache entry is retrained, never fatal
                ctx.say(f"teacher: ignoring unreadable cache {cache} ({type(exc).__name__}); retraining")
    ctx.say(f"teacher: none given, training the default '{arch}' on {data.name} for {epochs} epochs")
    result = train(model, data, TrainConfig(epochs=epochs, seed=options.seed, label="teacher"),
                   progress=options.progress)
    if cache is not None:
        atomic_write(cache, lambda p: torch.save(result.model.state_dict(), p))
    return Teacher(result.model, "trained-default", arch, f"default {arch} trained by edgekd", {}), result
