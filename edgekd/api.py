"""The Python API: ``build`` runs the stages in the order the data flows, one module each (``edgekd.stages``).

target -> data -> student choice + pre-flight (before any teacher pass) -> teacher -> distill
-> compress (prune, int8 contract, QAT) -> export + parity -> benchmark (runner.py, a fresh process)
-> choose precision -> report -> gate

Everything is written into a staging directory beside the run directory and swapped in only when the build
succeeded, so a failed or interrupted build never leaves a half-written run directory; ``--out`` is replaced only
when it is empty or an earlier edgekd run, under a lock (``edgekd.rundir``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd import distributed as ranks
from edgekd.backends import Calibration
from edgekd.bench import write_eval_inputs
from edgekd.compress.calibration import build_calibration_set, load_calibration_set, save_calibration_set
from edgekd.counts import check_build_counts
from edgekd.data import load_dataset
from edgekd.data.dataset import data_notes
from edgekd.distill.trainer import TrainConfig, accuracy, validate_config
from edgekd.errors import EdgekdError
from edgekd.gate import evaluate_gate
from edgekd.io import sha256_file
from edgekd.models.arch_libraries import library_normalization
from edgekd.models.budget import StudentChoice
from edgekd.models.teachers import predict_logits
from edgekd.publish import publish
from edgekd.rundir import check_out, check_unlocked, claim, resolve_out
from edgekd.schema import Report, dump
from edgekd.stages.choose import choose_shipped
from edgekd.stages.compress import compress
from edgekd.stages.context import DEFAULT_CACHE, BuildContext, BuildOptions
from edgekd.stages.distill import distill, distill_config, training_record
from edgekd.stages.export import reference_artifacts, student_artifacts
from edgekd.stages.manifest import write_manifest
from edgekd.stages.measure import measure
from edgekd.stages.report import TestScores, complete, make_report
from edgekd.stages.student import choose_student, rank_by_accuracy
from edgekd.stages.teacher import Teachers, epochs_for, prepare_teachers
from edgekd.targets import load_target, require_extras
from edgekd.text.teachers import teacher_vocabulary

__all__ = ["DEFAULT_CACHE", "BuildOptions", "BuildResult", "build"]


@dataclass
class BuildResult:
    out_dir: Path
    report: dict[str, Any]


def start(options: BuildOptions) -> BuildContext:
    """Target and data: everything later stages read; bad input here fails before any training."""
    target = load_target(options.target)
    require_extras(target)  # a missing runtime stops the build before any data loading or training
    out = resolve_out(options.out, target.name)
    if ranks.is_main():  # under torchrun rank 0 alone writes --out (and may hold its lock by now)
        check_out(out)  # a folder of the user's own files is refused before any data loading or training
        check_unlocked(out)
    check_build_counts(options)
    data = load_dataset(options.data, seed=options.seed, max_train=options.max_train,
                        label_column=options.label_column, text_column=options.text_column,
                        text_vocab=_text_vocab(options), image_size=options.image_size,
                        crop_fraction=options.crop_fraction, normalization=_normalization(options),
                        cache_dir=options.teacher_cache, use_cache=options.teacher_cache is not None)
    ctx = BuildContext(options, target, data, out)
    ctx.say(f"target: {target.name} ({target.description}); data: {data.name}, "
            f"{len(data.y_train)}/{len(data.y_val)}/{len(data.y_test)} train/val/test, shape {data.input_shape}")
    for note in data_notes(data.describe()):
        ctx.say(note)
    return ctx


def _text_vocab(options: BuildOptions) -> object:
    """Text data with a Hugging Face teacher directory: its vocabulary tokenizes the data (None: trained here)."""
    if options.text_column is None:
        return None
    return teacher_vocabulary(options.teacher)


def _normalization(options: BuildOptions) -> object:
    """The user's normalisation, else the one a library teacher (``torchvision:``/``timm:``) expects."""
    if options.normalization is not None or not options.teacher:
        return options.normalization
    return library_normalization(options.teacher_arch)


def calibration_set(ctx: BuildContext, stage: Path) -> tuple[Calibration, dict]:
    """The user's set from ``edgekd calibrate`` (``--calibration``), or one drawn from the training split."""
    o, data = ctx.options, ctx.data
    if o.calibration:
        calib = load_calibration_set(o.calibration, data.input_shape, data.fingerprint())
        shutil.copyfile(o.calibration, stage / "calibration.npz")
        return calib, {**calib.source, "file": "calibration.npz", "sha256": sha256_file(stage / "calibration.npz")}
    calib = build_calibration_set(data, ctx.target.calibration.samples, o.seed)
    manifest = save_calibration_set(calib, stage / "calibration.npz")  # + calibration.manifest.json: reusable
    return calib, {**manifest, "file": "calibration.npz"}


def checked_start(options: BuildOptions) -> tuple[BuildContext, int, TrainConfig]:
    """``start``, then every setting checked: bad input fails here, before any training."""
    ctx = start(options)
    teacher_epochs, student_epochs = epochs_for(options, len(ctx.data.y_train))
    if min(teacher_epochs, student_epochs) < 1:
        raise EdgekdError("--epochs must be >= 1", "pass a positive number of epochs")
    config = distill_config(ctx, student_epochs)
    validate_config(config, 1 + len(options.extra_teachers))  # bad settings fail before any training
    if options.calibration:  # a bad calibration file fails here too, not after training
        load_calibration_set(options.calibration, ctx.data.input_shape, ctx.data.fingerprint())
    return ctx, teacher_epochs, config


def build(options: BuildOptions) -> BuildResult:
    """Student (by MACs or measured latency) + pre-flight -> teacher -> KD -> compression -> artifacts -> parity
    -> benchmark -> report -> gate.

    Under torchrun (``edgekd.distributed``) every rank trains (teacher, KD and alone students, data-parallel);
    rank 0 alone claims the run directory, chooses the student and does everything after training, and every
    rank returns its report (the other ranks log nothing: rank 0 says it once).
    """
    t_start = time.perf_counter()
    if not ranks.is_main():
        options = dataclasses.replace(options, log=lambda message: None)
    # rank 0 first: it caches the data the others then read, and bad input is one message
    ctx, teacher_epochs, config = ranks.main_first(lambda: checked_start(options))
    # locked for the whole build (by rank 0 under torchrun); staging removed on any exit
    with claim(ctx.out, ctx.target.name) if ranks.is_main() else contextlib.nullcontext() as run:
        with ctx.timed("student_choice"):  # and pre-flight: a conversion failure costs seconds, not a teacher
            choice = ranks.from_main(lambda: choose_student(ctx))
        with ctx.timed("teacher"):
            teachers = prepare_teachers(ctx, teacher_epochs)
        with ctx.timed("student_accuracy"):  # --selection auto: the finalists ranked by a short distillation
            choice = ranks.from_main(lambda: rank_by_accuracy(ctx, config, teachers, choice))
        with ctx.timed("distill"):
            distilled = distill(ctx, config, teachers, choice)
        report = ranks.from_main(lambda: _finish(ctx, run, teachers, choice, distilled, t_start))
    ctx.say(f"done in {report['build_time_s']:.0f}s: {ctx.out}/ (report.json, report.md, report.html, manifest.json)")
    return BuildResult(ctx.out, report)


def _finish(ctx: BuildContext, run, teachers: Teachers, choice: StudentChoice, distilled, t_start: float) -> dict:
    """Everything after training, done once: package, report, gate, publish, and the run directory swapped in;
    the report as report.json holds it."""
    stage = run.staging
    report = complete(_package(ctx, stage, teachers, choice, distilled), choice, training_record(distilled),
                      ctx.stage_times_s, round(time.perf_counter() - t_start, 2))
    report.gate = evaluate_gate(report, ctx.target, strict=ctx.options.strict).to_model()
    publish(report, stage)  # report.json, report.md, report.html: the one writer, shared with `edgekd bench`
    run.commit()
    return dump(report)


def _package(ctx: BuildContext, stage: Path, teachers: Teachers, choice: StudentChoice, distilled) -> Report:
    """compress -> export + parity -> manifest -> benchmark -> choose -> report, all inside the staging dir."""
    data = ctx.data
    calibration, calib_manifest = calibration_set(ctx, stage)
    compressed = compress(ctx, distilled.student, teachers, calibration, stage)
    with ctx.timed("export"):
        built = student_artifacts(ctx, compressed, calibration, stage)
        built += reference_artifacts(ctx, compressed, teachers, stage)
    # The test split, scored once: the PyTorch models here, the artifacts by the runner below.
    teacher_logits = predict_logits(teachers.primary.model, data.x_test)
    student_logits = predict_logits(compressed.student, data.x_test)
    scores = TestScores.of(ctx, teacher_logits, student_logits, distilled, compressed)
    eval_path = write_eval_inputs(stage / "eval.npz", data.x_test, data.y_test, teacher_logits, student_logits,
                                  data.raw_test, data.source_test, data.test_texts)
    manifest = write_manifest(ctx, stage, built, calib_manifest, eval_path)
    with ctx.timed("benchmark"):
        measured = measure(ctx, stage, built, manifest, eval_path)
    shipped, reasons = choose_shipped(ctx, [m for m in measured if m.built.role == "student"],
                                      accuracy(compressed.student, data.x_val, data.y_val),
                                      accuracy(teachers.primary.model, data.x_val, data.y_val))
    scored = f"{data.meta['evaluation_split']}/, no separate test" if data.meta.get("evaluation_split") else "test"
    ctx.say(f"accuracy ({scored}): teacher {scores.teacher:.4f}, KD student {scores.student:.4f}"
            + (f", student alone {scores.alone:.4f}" if scores.alone is not None else ""))
    eval_inputs = {**manifest["eval_inputs"], "samples": int(len(data.y_test))}
    return make_report(ctx, teachers, choice, distilled, compressed, measured, shipped, reasons, scores,
                       calib_manifest, eval_inputs)
