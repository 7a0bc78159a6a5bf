"""Stage: distil the budget-sized student from the teacher(s), and (``--baseline``) train the same student alone.

Both runs use the same configuration, epochs, seed and initial weights, and checkpoint beside the run directory
so that a killed build resumes both of them mid-way. On the CPU they train side by side, half the cores each
(``distill/side_by_side.py``: a small student's step does not scale across cores). ``kd_gain`` compares these
two students before any compression, so it measures distillation and nothing else.
Under torchrun both train data-parallel on every rank, one after the other (``edgekd.distributed``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import pydantic
import torch
from torch import nn

from edgekd import distributed as ranks
from edgekd.distill.augment import build_augment
from edgekd.distill.loop import distributed, pick_device
from edgekd.distill.side_by_side import threads_per_run, train_side_by_side
from edgekd.distill.trainer import TrainConfig, TrainResult, accuracy, train
from edgekd.errors import EdgekdError
from edgekd.models.budget import StudentChoice
from edgekd.stages.context import BuildContext
from edgekd.stages.teacher import Teachers
from edgekd.text.kd import tinybert_options

# TinyBERT's feature losses beside the logit mix when student and teacher are both text transformers: small weights,
# since their MSEs are on a larger scale than the KL/CE terms; a user's own weights for them win
TINYBERT_WEIGHTS = {"tinybert_hidden": 0.1, "tinybert_attention": 0.1}


@dataclass
class Distilled:
    kd: TrainResult
    alone: TrainResult | None
    side_by_side_threads: int | None = None  # torch threads per run when KD and alone trained at once

    @property
    def student(self) -> nn.Module:
        return self.kd.model


def distill_config(ctx: BuildContext, epochs: int) -> TrainConfig:
    """TrainConfig from the CLI's mix and temperature plus any fields of a ``--distill-config`` YAML."""
    options = ctx.options
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options.distill) - known)
    if unknown:
        raise EdgekdError(f"unknown distillation setting(s) {unknown}",
                          f"use fields of TrainConfig: {', '.join(sorted(known - {'label', 'seed'}))}")
    fields = {"epochs": epochs, "seed": options.seed, "loss_weights": options.loss_weights,
              "temperature": options.temperature, "fast": options.fast_train, **options.distill,
              "label": "student (KD)"}
    config = typed_config(fields, "--distill-config")
    # refuse image-only augmentation on a table now, before a teacher is trained or loaded
    build_augment(config.augment, config.augment_options, config.teaching, is_image=ctx.data.is_image,
                  num_classes=ctx.data.num_classes)
    return config


def typed_config(fields: dict, source: str) -> TrainConfig:
    """TrainConfig(**fields); a value of the wrong type is one message naming the field, never a traceback."""
    try:
        return TrainConfig(**fields)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise EdgekdError(f"{source}: field '{where}' = {err.get('input')!r}: {err['msg']}{more}",
                          f"give '{where}' a value of type {_field_type(err['loc'][0])}") from None


def _field_type(name: object) -> str:
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    return str(types.get(name, "see edgekd.distill.trainer.TrainConfig"))


def distill(ctx: BuildContext, config: TrainConfig, teachers: Teachers, choice: StudentChoice) -> Distilled:
    data, options = ctx.data, ctx.options
    torch.manual_seed(options.seed)
    kd_model = choice.build(data.input_shape, data.num_classes)
    kd_config = with_feature_kd(config, kd_model, teachers.for_training)
    if kd_config is not config:
        ctx.say("distill: both models are text transformers: TinyBERT hidden-state and attention transfer added "
                f"({', '.join(f'{k}={v}' for k, v in kd_config.loss_weights.items())})")
    train_kd = functools.partial(train, kd_model, data, kd_config, teacher=teachers.for_training,
                                 progress=options.progress, checkpoint_dir=ctx.checkpoint_dir)
    if not options.baseline:
        return Distilled(train_kd(), None)
    torch.manual_seed(options.seed)  # the same initial weights as the KD student
    train_alone = functools.partial(train, choice.build(data.input_shape, data.num_classes), data,
                                    dataclasses.replace(config, label="student (alone)"), progress=options.progress,
                                    checkpoint_dir=ctx.checkpoint_dir)
    threads = side_by_side_threads(ctx, config)
    if threads:
        ctx.say(f"baseline: KD and alone runs side by side, {threads} torch thread(s) each "
                "(--no-side-by-side: one after the other)")
        kd, alone = train_side_by_side(train_kd, train_alone)
    else:
        kd = train_kd()
        alone = train_alone(fast_plan=kd.details.get("fast_plan"))
    ctx.say(f"baseline: KD student {accuracy(kd.model, data.x_val, data.y_val):.4f} vs alone "
            f"{accuracy(alone.model, data.x_val, data.y_val):.4f} on the validation split")
    return Distilled(kd, alone, threads)


def with_feature_kd(config: TrainConfig, student: nn.Module, teacher: nn.Module | list[nn.Module]) -> TrainConfig:
    """``config`` plus TinyBERT's hidden-state and attention transfer where the pair allows it (two text
    transformers, one teacher: an ensemble's layers do not map onto one student), as TinyBERT distils; ``config``
    itself otherwise, so the alone run and every image build keep their mix."""
    options = tinybert_options(student, teacher) if isinstance(teacher, nn.Module) else {}
    if not options:
        return config
    return dataclasses.replace(config, loss_weights={**TINYBERT_WEIGHTS, **config.loss_weights},
                               loss_options={**options, **config.loss_options})


def side_by_side_threads(ctx: BuildContext, config: TrainConfig) -> int | None:
    """torch threads per run when ``--baseline``'s two runs train at once (on the CPU, with cores to split,
    outside torchrun); None when they train one after the other."""
    on_cpu = pick_device(config.device).type == "cpu"
    threads = threads_per_run()
    return threads if ctx.options.side_by_side and on_cpu and threads >= 1 and not distributed() else None


def training_record(distilled: Distilled) -> dict:
    """How the KD student trained, for the report: world size and backend of the job, device and precision."""
    job, details = ranks.job_world(), distilled.kd.details
    return {"world_size": job.size, "backend": job.backend, "device": details.get("device", "cpu"),
            "precision": details.get("precision", "fp32")}
