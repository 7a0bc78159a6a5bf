"""The Python API: ``build`` chains the stages, one module each, data flowing one way.

target -> data -> teacher -> fit_student_to_budget -> distill -> export+quantize (per format) -> parity ->
benchmark (runner.py, a fresh process) -> choose precision -> report -> gate

Everything is written into a staging directory beside the run directory and swapped in only when the build
succeeded, so a failed or interrupted build never leaves a half-written run directory.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd import __version__
from edgekd.backends import Artifact, check_parity, get_backend, parity_failure
from edgekd.bench import run_local, write_eval_inputs
from edgekd.compress.calibration import build_calibration_set, save_calibration_set
from edgekd.data import Dataset, load_dataset
from edgekd.distill.trainer import TrainConfig, TrainResult, accuracy, train, validate_config
from edgekd.errors import ContractError, EdgekdError
from edgekd.gate import evaluate_gate
from edgekd.io import replace_dir, sha256_file, write_json, write_text
from edgekd.models.budget import StudentChoice, count_macs, count_params, fit_student_to_budget
from edgekd.models.students import build_model
from edgekd.models.teachers import (
    Teacher,
    cached_teacher_path,
    default_teacher_arch,
    load_teacher,
    predict_logits,
    teacher_cache_key,
)
from edgekd.report import REPORT_SCHEMA_VERSION, render_markdown
from edgekd.report_html import write_html
from edgekd.targets import TargetProfile, load_target, require_extras

DEFAULT_CACHE = Path(os.environ.get("EDGEKD_CACHE", Path.home() / ".cache" / "edgekd"))


@dataclass
class BuildOptions:
    target: str
    data: str = "digits"
    teacher: str | None = None
    extra_teachers: list[str] = field(default_factory=list)  # more teachers for multi-teacher KD
    distill: dict[str, Any] = field(default_factory=dict)  # extra TrainConfig fields (YAML --distill-config)
    resume: bool = True  # checkpoint each epoch beside the run dir; the same command resumes after a kill
    teacher_arch: str | None = None
    teacher_config: dict[str, Any] = field(default_factory=dict)
    trust_pickle: bool = False
    out: Path | None = None
    epochs: int | None = None  # student; None = sized to the data
    teacher_epochs: int | None = None
    seed: int = 0
    baseline: bool = False
    max_train: int | None = None
    loss_weights: dict[str, float] = field(default_factory=lambda: {"kd": 0.7, "ce": 0.3})
    temperature: float = 4.0
    prune: float = 0.0  # share of MACs to remove by structured pruning after distillation (0 = off)
    prune_steps: int = 2
    max_float_fraction: float = 0.5  # accuracy-aware int8 gives up beyond this share of layers in float
    qat_epochs: int = 0  # > 0: QAT with the teacher when accuracy-aware PTQ can't meet the contract (ONNX)
    runs: int = 200
    warmup: int = 20
    progress: bool = True
    teacher_cache: Path | None = DEFAULT_CACHE
    log: Any = None  # callable(str) for progress lines; None = print to stderr


@dataclass
class BuildResult:
    out_dir: Path
    report: dict[str, Any]


def _say(options: BuildOptions, message: str) -> None:
    (options.log or (lambda m: print(m, file=sys.stderr, flush=True)))(message)


def auto_epochs(n_train: int) -> tuple[int, int]:
    """(teacher, student) epochs: many passes over a small set, few over a large one."""
    if n_train <= 5_000:
        return 30, 40
    if n_train <= 20_000:
        return 12, 15
    return 6, 8


# --------------------------------------------------------------------------------------------- stages
def distill_config(options: BuildOptions, epochs: int) -> TrainConfig:
    """TrainConfig from the CLI's mix and temperature plus any fields of a ``--distill-config`` YAML."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options.distill) - known)
    if unknown:
        raise EdgekdError(f"unknown distillation setting(s) {unknown}",
                          f"use fields of TrainConfig: {', '.join(sorted(known - {'label', 'seed'}))}")
    fields = {"epochs": epochs, "seed": options.seed, "loss_weights": options.loss_weights,
              "temperature": options.temperature, **options.distill, "label": "student (KD)"}
    if "teacher_weights" in fields and fields["teacher_weights"] is not None:
        fields["teacher_weights"] = tuple(fields["teacher_weights"])
    return TrainConfig(**fields)


def prepare_teacher(options: BuildOptions, data: Dataset, epochs: int) -> tuple[Teacher, TrainResult | None]:
    """The user's teacher, or a default one trained here (cached by data, architecture, epochs and seed)."""
    if options.teacher:
        return load_teacher(options.teacher, data.input_shape, data.num_classes, options.teacher_arch,
                            options.teacher_config, options.trust_pickle), None
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
                _say(options, f"teacher: default '{arch}' loaded from cache {cache} (trained earlier on this data)")
                return Teacher(model, "trained-default (cached)", arch, f"default {arch}, cached at {cache}", {}), None
            except Exception as exc:  # noqa: BLE001 - a bad cache entry is retrained, never fatal
                _say(options, f"teacher: ignoring unreadable cache {cache} ({type(exc).__name__}); retraining")
    _say(options, f"teacher: none given, training the default '{arch}' on {data.name} for {epochs} epochs")
    result = train(model, data, TrainConfig(epochs=epochs, seed=options.seed, label="teacher"),
                   progress=options.progress)
    if cache is not None:
        from edgekd.io import atomic_write

        atomic_write(cache, lambda p: torch.save(result.model.state_dict(), p))
    return Teacher(result.model, "trained-default", arch, f"default {arch} trained by edgekd", {}), result


def export_artifacts(target: TargetProfile, student: torch.nn.Module, data: Dataset, calibration, stage: Path,
                     options: BuildOptions, teacher: torch.nn.Module | None = None) -> list[tuple[Artifact, dict]]:
    """Every format x precision the target allows, plus an fp32 reference per format to measure against."""
    sample = data.x_test[:1]
    parity_inputs = np.concatenate([calibration.x[:128], data.x_test[:512]])
    reference = predict_logits(student, parity_inputs)
    built = []
    wanted_precisions = list(dict.fromkeys(["fp32", *target.runtime.precisions]))
    for fmt in target.runtime.formats:
        backend = backend_for(target, fmt)
        for precision in wanted_precisions:
            if precision not in backend.precisions:
                raise EdgekdError(f"format '{fmt}' cannot take precision '{precision}'",
                                  f"use one of {backend.precisions} in the target's runtime.precision")
            path = stage / f"model_{precision}{backend.suffix}"
            t0 = time.perf_counter()
            artifact = backend.export(student, sample, path, precision, calibration if precision == "int8" else None)
            if precision == "int8":
                artifact = enforce_quantization_contract(target, artifact, student, teacher, data, calibration,
                                                         stage, options)
            parity = check_parity(artifact, reference, parity_inputs, threads=1)
            _say(options, f"export: {path.name} ({fmt} {precision}) in {time.perf_counter() - t0:.1f}s, "
                          f"parity max|diff| {parity.max_abs_diff:.2e}, top-1 {parity.top1_agreement:.2%}")
            if not parity.passed:
                raise parity_failure(artifact, parity)
            built.append((artifact, {**parity.to_dict(), **operator_report(target, artifact)}))
    return built


def enforce_quantization_contract(target: TargetProfile, artifact: Artifact, student: torch.nn.Module,
                                  teacher: torch.nn.Module | None, data: Dataset, calibration, stage: Path,
                                  options: BuildOptions) -> Artifact:
    """Keep plain int8 when it holds ``max_quantization_drop``; otherwise keep the most sensitive layers in float.

    Checked on the validation and test splits (the gate judges the test split). ONNX: a layer-sensitivity search;
    OpenVINO: NNCF's accuracy control; TFLite: per-op NO_QUANTIZE recipes found by sensitivity; then, if
    allowed, QAT with the teacher (ONNX). A contract nothing meets raises
    ContractError: the build ships nothing.
    """
    from edgekd.runner import load_session

    max_drop = target.budgets.max_quantization_drop
    if max_drop is None or artifact.format not in ("onnx", "openvino", "tflite"):
        return artifact
    splits = [(data.x_val, data.y_val), (data.x_test, data.y_test)]
    student_acc = [accuracy(student, x, y) for x, y in splits]

    def worst_drop() -> float:
        session = load_session(str(artifact.path), 1, "int8")
        return max(a - float((session.run_batched(x).argmax(1) == y).mean()) for a, (x, y) in zip(student_acc,
                                                                                                  splits, strict=True))

    drop = worst_drop()
    if drop <= max_drop + 1e-12:
        return artifact
    from edgekd.compress.accuracy_aware import (
        QuantContract,
        onnx_accuracy_aware_int8,
        openvino_accuracy_aware_int8,
        tflite_accuracy_aware_int8,
    )

    _say(options, f"quantize: plain {artifact.format} int8 loses {drop:.4f} > max_quantization_drop "
                  f"{max_drop}; searching for layers to keep in float")
    contract = QuantContract(max_drop)
    fp32 = artifact.path.with_name(f"model_fp32{artifact.path.suffix}")
    threads = min(target.runtime.threads, os.cpu_count() or 1)
    try:
        if artifact.format == "onnx":
            result = onnx_accuracy_aware_int8(fp32, artifact.path, calibration, splits, contract, threads=threads,
                                              max_float_fraction=options.max_float_fraction,
                                              timing_x=data.x_test[:64], log=lambda m: _say(options, m))
        elif artifact.format == "tflite":
            result = tflite_accuracy_aware_int8(student, data.x_test[:1], artifact.path, calibration, splits, contract,
                                                integer_io=target.runtime.integer_io,
                                                max_float_fraction=options.max_float_fraction, threads=threads,
                                                timing_x=data.x_test[:16], log=lambda m: _say(options, m))
        else:
            result = openvino_accuracy_aware_int8(fp32, artifact.path, calibration, splits[0], contract,
                                                  threads=threads, timing_x=data.x_test[:64],
                                                  log=lambda m: _say(options, m))
        details = {"accuracy_aware": {k: v for k, v in result.to_dict().items() if k != "path"}}
    except ContractError:
        if not (options.qat_epochs and artifact.format == "onnx"):
            for f in artifact.files:  # the plain int8 that broke the contract must not be left to ship
                f.unlink(missing_ok=True)
            raise
        from edgekd.compress.qat import QatConfig, qat_kd_onnx_int8

        _say(options, "quantize: post-training search failed; trying QAT with the teacher")
        qat = qat_kd_onnx_int8(student, teacher, data, calibration, artifact.path,
                               QatConfig(epochs=options.qat_epochs, seed=options.seed), progress=options.progress)
        drop = worst_drop()
        if drop > max_drop + 1e-12:
            artifact.path.unlink(missing_ok=True)
            raise ContractError(
                f"no int8 {artifact.format} model meets max_quantization_drop={max_drop}: QAT reached a drop of "
                f"{drop:.4f}; nothing was shipped", "relax the budget or allow fp16/fp32 in the target") from None
        details = {"qat": qat.to_dict()}
    artifact.details.update(details)
    return artifact


def stage_waterfall(target: TargetProfile, report: dict, teacher_row: dict, unpruned_row: dict | None,
                    choice: StudentChoice, pruned: bool) -> list[dict]:
    """teacher -> student -> [pruned] -> quantized, each measured in this run in the target's primary format."""
    fmt = target.runtime.format
    rows = {(r["format"], r["precision"]): r for r in report["artifacts"]}
    shipped = next(r for r in report["artifacts"] if r["format"] == fmt and r.get("shipped"))
    fp32 = rows[(fmt, "fp32")]

    def stage(name: str, row: dict, accuracy_: float, params: int, macs: int) -> dict:
        return {"stage": name, "artifact": row["path"], "accuracy": accuracy_, "params": params, "macs": macs,
                "size_bytes": row["size_bytes"], "p50_ms": row["latency_ms"]["p50"]}

    t = report["teacher"]
    out = [stage("teacher", teacher_row, t["accuracy"], t["params"], t["macs"])]
    if pruned and unpruned_row is not None:
        out.append(stage("student", unpruned_row, unpruned_row["accuracy"], choice.params, choice.macs))
        out.append(stage("pruned", fp32, fp32["accuracy"], fp32["params"], fp32["macs"]))
    else:
        out.append(stage("student", fp32, fp32["accuracy"], fp32["params"], fp32["macs"]))
    out.append(stage("quantized", shipped, shipped["accuracy"], shipped["params"], shipped["macs"]))
    return out


def backend_for(target: TargetProfile, fmt: str):
    """The format's backend, configured from the target (threads, integer I/O)."""
    options: dict[str, Any] = {}
    if fmt == "onnx":
        options["threads"] = min(target.runtime.threads, os.cpu_count() or 1)
    if fmt == "tflite":
        options["integer_io"] = target.runtime.integer_io
    return get_backend(fmt, **options)


def operator_report(target: TargetProfile, artifact: Artifact) -> dict[str, Any]:
    """Operators of the artifact and, for the target's delegate, which would fall back to the CPU."""
    from edgekd.compat import check_compatibility, enforce_full_delegation, list_operators, load_delegate

    delegate = target.runtime.delegate
    if delegate == "none" or load_delegate(delegate).format != artifact.format:
        return {"operators": list_operators(artifact.path)}
    compat = check_compatibility(artifact.path, delegate)
    if target.runtime.require_full_delegation:
        enforce_full_delegation(compat)
    return {"operators": compat.operators, "delegate": {"name": delegate, "fallback": compat.fallback,
                                                        "fully_delegated": compat.fully_delegated,
                                                        "min_android_api": compat.min_api}}


def manifest_entry(artifact: Artifact, stage: Path, role: str) -> dict:
    files = [{"path": f.name, "sha256": sha256_file(f), "size_bytes": f.stat().st_size} for f in artifact.files]
    return {
        "path": artifact.path.name,
        "role": role,
        "format": artifact.format,
        "precision": artifact.precision,
        "runtime": artifact.runtime,
        "sha256": files[0]["sha256"],
        "size_bytes": sum(f["size_bytes"] for f in files),
        "files": files,
        **{k: v for k, v in artifact.details.items() if k != "calibration"},
        **({"calibration": artifact.details["calibration"]} if "calibration" in artifact.details else {}),
    }


def choose_shipped(target: TargetProfile, rows: list[dict], student_accuracy: float, teacher_accuracy: float,
                   ) -> dict[str, str]:
    """Per format, the fastest allowed precision that keeps the accuracy contract; why, in words."""
    budgets = target.budgets
    reasons: dict[str, str] = {}
    for fmt in target.runtime.formats:
        candidates = [r for r in rows if r["format"] == fmt and r["precision"] in target.runtime.precisions]
        meeting, failing = [], []
        for r in candidates:
            drop = student_accuracy - r["accuracy"]
            ratio = r["accuracy"] / teacher_accuracy if teacher_accuracy > 0 else 0.0
            ok = (budgets.max_quantization_drop is None or drop <= budgets.max_quantization_drop + 1e-12) and (
                budgets.min_accuracy_ratio is None or ratio >= budgets.min_accuracy_ratio - 1e-12)
            (meeting if ok else failing).append((r, drop, ratio))
        if not meeting:
            best = max(candidates, key=lambda r: r["accuracy"])
            raise ContractError(
                f"no {fmt} precision in {list(target.runtime.precisions)} meets the accuracy contract "
                f"(max_quantization_drop={budgets.max_quantization_drop}, "
                f"min_accuracy_ratio={budgets.min_accuracy_ratio}); the best, {best['path']}, reached accuracy "
                f"{best['accuracy']:.4f} vs the fp32 student's {student_accuracy:.4f}; nothing was shipped",
                "relax the budget in the target file, or allow another precision (e.g. fp16/fp32)",
            )
        chosen, drop, _ = min(meeting, key=lambda t: t[0]["latency_ms"]["p50"])
        chosen["shipped"] = True
        fp32 = next((r for r in rows if r["format"] == fmt and r["precision"] == "fp32"), None)
        speed = f", {fp32['latency_ms']['p50'] / chosen['latency_ms']['p50']:.2f}x the speed of fp32" if fp32 else ""
        others = [f"{r['precision']} failed the accuracy contract (drop {d:.4f})" for r, d, _ in failing]
        slower = [f"{r['precision']} was slower (p50 {r['latency_ms']['p50']:.4f} ms)" for r, _, _ in meeting
                  if r is not chosen]
        reasons[fmt] = (f"{chosen['precision']}: fastest precision meeting the accuracy contract "
                        f"(p50 {chosen['latency_ms']['p50']:.4f} ms{speed}, drop {drop:.4f})"
                        + ("; " + "; ".join(others + slower) if others or slower else ""))
        if fp32 is not None and fp32 is not chosen and fp32["latency_ms"]["p50"] < chosen["latency_ms"]["p50"]:
            slowdown = chosen["latency_ms"]["p50"] / fp32["latency_ms"]["p50"]
            reasons[fmt] += f"; note: {chosen['precision']} is {slowdown:.2f}x SLOWER than fp32 on this host"
    return reasons


def machine_summary(target: TargetProfile, runner_machine: dict) -> dict:
    return {
        **runner_machine,
        "is_target_device": runner_machine.get("arch") == target.device.arch,
        "how": "edgekd runner.py in a fresh process on this host",
    }


# --------------------------------------------------------------------------------------------- build
def build(options: BuildOptions) -> BuildResult:
    """Teacher -> budget-sized student -> KD -> artifacts -> parity -> benchmark -> report -> gate."""
    t_start = time.perf_counter()
    target = load_target(options.target)
    require_extras(target)  # a missing runtime stops the build before any data loading or training
    out = Path(options.out) if options.out else Path("runs") / target.name
    data = load_dataset(options.data, seed=options.seed, max_train=options.max_train)
    auto_teacher, auto_student = auto_epochs(len(data.y_train))
    teacher_epochs = options.teacher_epochs or auto_teacher
    student_epochs = options.epochs or auto_student
    if min(teacher_epochs, student_epochs) < 1:
        raise EdgekdError("--epochs must be >= 1", "pass a positive number of epochs")
    _say(options, f"target: {target.name} ({target.description}); data: {data.name}, "
                  f"{len(data.y_train)}/{len(data.y_val)}/{len(data.y_test)} train/val/test, shape {data.input_shape}")

    config = distill_config(options, student_epochs)
    validate_config(config, 1 + len(options.extra_teachers))  # bad settings fail before any training
    teacher, teacher_training = prepare_teacher(options, data, teacher_epochs)
    teacher_macs = count_macs(teacher.model, data.input_shape)
    teacher_params = count_params(teacher.model)
    choice: StudentChoice = fit_student_to_budget(data.input_shape, data.num_classes, target.student_budget,
                                                  teacher_macs)
    _say(options, f"student: {choice.family} {choice.config} -> {choice.params} params, {choice.macs} MACs "
                  f"(budget {choice.max_params} params, {choice.max_macs} MACs; teacher {teacher_macs} MACs)")

    teachers = [teacher.model] + [
        load_teacher(path, data.input_shape, data.num_classes, options.teacher_arch, options.teacher_config,
                     options.trust_pickle).model for path in options.extra_teachers]
    checkpoints = out.parent / f".{out.name}.checkpoints" if options.resume else None
    torch.manual_seed(options.seed)
    kd = train(choice.build(data.input_shape, data.num_classes), data, config,
               teacher=teachers if len(teachers) > 1 else teacher.model, progress=options.progress,
               checkpoint_dir=checkpoints)
    student = kd.model
    pruning = None
    if options.prune:
        from edgekd.compress.prune import PruneConfig, prune_structured

        unpruned = copy.deepcopy(student)
        pruning = prune_structured(student, teacher.model, data, PruneConfig(
            ratio=options.prune, steps=options.prune_steps, channel_multiple=target.student_budget.channel_multiple,
            loss_weights=options.loss_weights, temperature=options.temperature, seed=options.seed,
            threads=min(target.runtime.threads, os.cpu_count() or 1),
            objective="latency"), progress=options.progress, log=lambda m: _say(options, m))
        _say(options, f"pruning: {pruning.summary}")
        student = pruning.model if pruning.kept_step else unpruned
    alone_accuracy = None
    if options.baseline:
        torch.manual_seed(options.seed)
        alone = train(choice.build(data.input_shape, data.num_classes), data,
                      dataclasses.replace(config, label="student (alone)"), progress=options.progress)
        alone_accuracy = accuracy(alone.model, data.x_test, data.y_test)

    teacher_test_logits = predict_logits(teacher.model, data.x_test)
    student_test_logits = predict_logits(student, data.x_test)
    teacher_accuracy = float((teacher_test_logits.argmax(1) == data.y_test).mean())
    student_accuracy = float((student_test_logits.argmax(1) == data.y_test).mean())
    _say(options, f"accuracy: teacher {teacher_accuracy:.4f}, KD student {student_accuracy:.4f}"
                  + (f", student alone {alone_accuracy:.4f}" if alone_accuracy is not None else ""))

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.staging-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    try:
        report = _build_artifacts(options, target, data, teacher, teacher_training, teacher_macs, teacher_params,
                                  choice, kd, student, alone_accuracy, teacher_test_logits, student_test_logits,
                                  teacher_accuracy, student_accuracy, stage, pruning,
                                  unpruned if pruning and pruning.kept_step else None)
        report["build_time_s"] = round(time.perf_counter() - t_start, 2)
        write_json(stage / "report.json", report)
        write_text(stage / "report.md", render_markdown(report))
        write_html(report, stage / "report.html")
        replace_dir(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    if checkpoints is not None and checkpoints.exists():
        shutil.rmtree(checkpoints, ignore_errors=True)  # the run is complete: nothing left to resume
    _say(options, f"done in {report['build_time_s']:.0f}s: {out}/ (report.json, report.md, report.html, manifest.json)")
    return BuildResult(out, report)


def _build_artifacts(options, target, data, teacher, teacher_training, teacher_macs, teacher_params, choice, kd,
                     student, alone_accuracy, teacher_test_logits, student_test_logits, teacher_accuracy,
                     student_accuracy, stage: Path, pruning=None, unpruned=None) -> dict:
    calibration = build_calibration_set(data, target.calibration.samples, options.seed)
    calib_manifest = save_calibration_set(calibration, stage / "calibration.npz")
    calibration.source.update({"file": "calibration.npz", "sha256": calib_manifest["sha256"]})
    built = export_artifacts(target, student, data, calibration, stage, options, teacher.model)
    student_params, student_macs = count_params(student), count_macs(student, data.input_shape)

    # The teacher is benchmarked in every runtime the student ships in, so "speed vs teacher" compares
    # models, not runtimes' per-call overheads.
    teacher_artifacts = []
    for fmt in target.runtime.formats:
        backend = backend_for(target, fmt)
        artifact = backend.export(teacher.model, data.x_test[:1], stage / f"teacher_fp32{backend.suffix}", "fp32",
                                  None)
        parity = check_parity(artifact, teacher_test_logits[:256], data.x_test[:256])
        if not parity.passed:
            raise parity_failure(artifact, parity)
        teacher_artifacts.append(artifact)
    if unpruned is not None:  # the unpruned student, measured in this run for the stage waterfall
        backend = backend_for(target, target.runtime.format)
        teacher_artifacts.append(backend.export(unpruned, data.x_test[:1], stage / f"unpruned_fp32{backend.suffix}",
                                                "fp32", None))

    eval_path = write_eval_inputs(stage / "eval.npz", data.x_test, data.y_test, teacher_test_logits,
                                  student_test_logits)
    entries = [manifest_entry(a, stage, "student") for a, _ in built]
    entries += [manifest_entry(a, stage, "unpruned-reference" if a.path.name.startswith("unpruned")
                               else "teacher-reference") for a in teacher_artifacts]
    manifest = {
        "edgekd_version": __version__,
        "target": target.name,
        "input": {"shape": [1, *data.input_shape], "dtype": "float32",
                  "layout": "NCHW" if data.is_image else "NF", "name": "input"},
        "output": {"shape": [1, data.num_classes], "dtype": "float32", "name": "logits", "kind": "logits"},
        "normalization": data.describe()["normalization"],
        "classes": data.classes,
        "data": data.describe(),
        "calibration": calib_manifest,
        "eval_inputs": {"path": eval_path.name, "sha256": sha256_file(eval_path)},
        "artifacts": entries,
    }
    write_json(stage / "manifest.json", manifest)

    threads = min(target.runtime.threads, os.cpu_count() or 1)
    rows, teacher_rows, machine = [], {}, {}
    from tqdm.auto import tqdm

    for entry in tqdm(entries, desc="benchmark", unit="artifact", disable=not options.progress, leave=False):
        result = run_local(stage / entry["path"], eval_path, options.runs, options.warmup, threads)
        machine = result["machine"]
        row = {**_artifact_row(entry, result), "_raw": result}
        if entry["role"] == "teacher-reference":
            teacher_rows[entry["format"]] = row
        elif entry["role"] == "unpruned-reference":
            teacher_rows["_unpruned"] = row
        else:
            rows.append(row)
    checks_by_path = {a.path.name: p for a, p in built}
    for row in rows:
        checks = dict(checks_by_path[row["path"]])
        row["operators"] = checks.pop("operators")
        if "delegate" in checks:
            row["delegate"] = checks.pop("delegate")
        row["parity"] = checks
        row["shipped"] = False
    reasons = choose_shipped(target, rows, student_accuracy, teacher_accuracy)
    for row in rows:
        raw = row.pop("_raw")
        row["latency_ms_detail"] = raw["latency_ms"]
        row["per_class_accuracy"] = raw.get("per_class_accuracy")
        row["load_ms"], row["first_inference_ms"] = raw["load_ms"], raw["first_inference_ms"]
        row["inference_precision"] = raw["runtime"].get("inference_precision")
        row["torch_imported_in_runner"] = raw["torch_imported"]
        fp32 = next(r for r in rows if r["format"] == row["format"] and r["precision"] == "fp32")
        teacher_same_runtime = teacher_rows[row["format"]]
        row["speed_vs_fp32"] = fp32["latency_ms"]["p50"] / row["latency_ms"]["p50"]
        row["teacher_p50_ms_same_runtime"] = teacher_same_runtime["latency_ms"]["p50"]
        row["speed_vs_teacher"] = teacher_same_runtime["latency_ms"]["p50"] / row["latency_ms"]["p50"]
        row["macs"] = student_macs
        row["params"] = student_params
    for r in teacher_rows.values():
        r.pop("_raw")
    unpruned_row = teacher_rows.pop("_unpruned", None)
    teacher_row = teacher_rows[target.runtime.format]

    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "edgekd_version": __version__,
        "target": target.name,
        "target_path": str(Path(target.path).resolve()),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "measured_on": {**machine_summary(target, machine), "threads": threads,
                        "runtime_versions": _runtime_versions(rows)},
        "data": data.describe(),
        "teacher": {
            "source": teacher.source,
            "arch": teacher.arch,
            "description": teacher.description,
            "params": teacher_params,
            "macs": teacher_macs,
            "accuracy": teacher_accuracy,
            "size_bytes": teacher_row["size_bytes"],
            "latency_ms": teacher_row["latency_ms"],
            "peak_memory_mb": teacher_row["peak_memory_mb"],
            "benchmarked_as": f"{teacher_row['path']} ({teacher_row['runtime']} fp32, same runner and threads)",
            "by_format": {fmt: {k: r[k] for k in ("path", "runtime", "size_bytes", "latency_ms", "peak_memory_mb",
                                                  "accuracy")} for fmt, r in teacher_rows.items()},
            "training": teacher_training.summary() if teacher_training else None,
        },
        "student": {
            "family": choice.family,
            "config": choice.config,
            "params": student_params,
            "macs": student_macs,
            "accuracy": student_accuracy,
            "accuracy_trained_alone": alone_accuracy,
            "kd_gain": None if alone_accuracy is None else student_accuracy - alone_accuracy,
            "macs_ratio_to_teacher": student_macs / teacher_macs if teacher_macs else None,
            "budget_fit": choice.to_dict(),
            "distillation": kd.summary(),
        },
        "calibration": calib_manifest,
        "pruning": pruning.to_dict() if pruning else None,
        "artifacts": rows,
        "precision_choice": reasons,
    }
    report["stages"] = stage_waterfall(target, report, teacher_row, unpruned_row, choice, pruning is not None
                                       and unpruned is not None)
    report["gate"] = evaluate_gate(report, target).to_dict()
    return report


def _artifact_row(entry: dict, result: dict) -> dict:
    lat = result["latency_ms"]
    return {
        "path": entry["path"],
        "format": entry["format"],
        "precision": entry["precision"],
        "runtime": result["runtime"]["name"],
        "runtime_version": result["runtime"]["version"],
        "sha256": entry["sha256"],
        "size_bytes": entry["size_bytes"],
        "accuracy": result.get("accuracy"),
        "agreement_with_teacher": result.get("agreement_with_teacher"),
        "latency_ms": {k: lat[k] for k in ("p50", "p90", "p95", "p99", "mean", "std")},
        "noise_pct": lat["noise_pct"],
        "peak_memory_mb": result.get("peak_memory_mb"),
        **{k: entry[k] for k in ("scheme", "scheme_p50_ms", "layout", "input_dtype", "input_quantization",
                                 "output_quantization", "accuracy_aware", "qat") if k in entry},
    }


def _runtime_versions(rows: list[dict]) -> dict:
    versions = {r["runtime"]: r["runtime_version"] for r in rows}
    versions.update({"python": platform.python_version(), "torch": torch.__version__})
    return versions
