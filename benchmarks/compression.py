#!/usr/bin/env python3
"""Compression waterfall on Fashion-MNIST at the rpi4 budget: teacher -> student -> pruned -> quantized.

Every stage is exported to ONNX and measured in this run, on this host, with onnxruntime (1 thread, batch 1,
stages interleaved round by round so drift hits all alike). This is host latency, not Raspberry Pi latency.

Defaults keep the run around 10 minutes on 2 cores: 12,000 training images (10 % held out for validation),
teacher 3 epochs, student 6 epochs of KD, 2 pruning steps with 2 KD fine-tune epochs each. Teacher and student
are cached under benchmarks/.cache/ keyed by their configuration (the script says when it reuses them).

Also demonstrated: the accuracy-aware int8 search at the target's contract and at a tight one (0.002), an
impossible contract (an accuracy floor above the fp32 model's) erroring with nothing shipped, and QAT with KD.

    python benchmarks/compression.py            # writes benchmarks/results/compression.json
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from edgekd.backends.onnx import export_onnx_fp32  # noqa: E402
from edgekd.compress.accuracy_aware import QuantContract, _measure_interleaved, onnx_accuracy_aware_int8  # noqa: E402
from edgekd.compress.calibration import build_calibration_set  # noqa: E402
from edgekd.compress.prune import PruneConfig, prune_structured  # noqa: E402
from edgekd.compress.qat import QatConfig, qat_kd_onnx_int8  # noqa: E402
from edgekd.data import load_dataset  # noqa: E402
from edgekd.distill.trainer import TrainConfig, train  # noqa: E402
from edgekd.errors import ContractError  # noqa: E402
from edgekd.models.budget import count_macs, count_params, fit_student_to_budget  # noqa: E402
from edgekd.models.students import build_model  # noqa: E402
from edgekd.runner import load_session  # noqa: E402
from edgekd.targets import load_target  # noqa: E402

DATA = ROOT.parent.parent / "shared" / "datasets" / "fashion-mnist"
CACHE = ROOT / ".cache"
RESULTS = ROOT / "results" / "compression.json"
CONFIG = {"max_train": 12000, "seed": 0, "teacher_epochs": 3, "student_epochs": 6, "target": "rpi4",
          "prune": {"ratio": 0.4, "steps": 2, "finetune_epochs": 2}, "qat_epochs": 1, "threads": 1}


def log(msg: str) -> None:
    print(msg, flush=True)


def cached_train(name: str, key: dict, build, fit) -> torch.nn.Module:
    """Train once per configuration; reuse the weights from benchmarks/.cache/ afterwards."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = CACHE / f"{name}-{digest}.pt"
    model = build()
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        log(f"{name}: reused from cache {path.relative_to(ROOT.parent)} (delete it to retrain)")
        return model.eval()
    t0 = time.perf_counter()
    model = fit(model)
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    log(f"{name}: trained in {time.perf_counter() - t0:.0f}s, cached at {path.relative_to(ROOT.parent)}")
    return model.eval()


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray, precision: str) -> float:
    return float((load_session(str(path), 1, precision).run_batched(x).argmax(1) == y).mean())


def main() -> int:
    t_start = time.perf_counter()
    if not DATA.exists():
        print(f"Fashion-MNIST not found at {DATA}: this benchmark needs it (IDX files)", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    cfg = CONFIG
    target = load_target(cfg["target"])
    data = load_dataset(str(DATA), seed=cfg["seed"], max_train=cfg["max_train"])
    log(f"data: Fashion-MNIST {len(data.y_train)}/{len(data.y_val)}/{len(data.y_test)} train/val/test "
        f"(subset of the 60k training images: max_train={cfg['max_train']}); target {target.name}")
    fp = data.fingerprint()

    teacher = cached_train(
        "teacher", {"data": fp, "arch": "teacher_cnn", "epochs": cfg["teacher_epochs"], "seed": cfg["seed"]},
        lambda: (torch.manual_seed(cfg["seed"]), build_model("teacher_cnn", data.input_shape, data.num_classes))[1],
        lambda m: train(m, data, TrainConfig(epochs=cfg["teacher_epochs"], seed=cfg["seed"], label="teacher"),
                        progress=False).model)
    choice = fit_student_to_budget(data.input_shape, data.num_classes, target.student_budget,
                                   count_macs(teacher, data.input_shape))
    student = cached_train(
        "student", {"data": fp, "choice": choice.config, "epochs": cfg["student_epochs"], "seed": cfg["seed"],
                    "teacher_epochs": cfg["teacher_epochs"]},
        lambda: (torch.manual_seed(cfg["seed"]), choice.build(data.input_shape, data.num_classes))[1],
        lambda m: train(m, data, TrainConfig(epochs=cfg["student_epochs"], seed=cfg["seed"], label="student"),
                        teacher=teacher, progress=False).model)
    log(f"student: {choice.family} {choice.config}, {choice.params} params, {choice.macs} MACs")

    t0 = time.perf_counter()
    pc = PruneConfig(channel_multiple=target.student_budget.channel_multiple, threads=cfg["threads"],
                     seed=cfg["seed"], **cfg["prune"])
    pruned = prune_structured(student, teacher, data, pc, log=log)
    prune_s = time.perf_counter() - t0
    log(f"pruning: {pruned.summary} ({prune_s:.0f}s)")

    calibration = build_calibration_set(data, target.calibration.samples, cfg["seed"])
    timing_x = data.x_test[:64]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {name: export_onnx_fp32(copy.deepcopy(m).eval(), data.x_test[:1], tmp / f"{name}.onnx")
                 for name, m in (("teacher", teacher), ("student", student), ("pruned", pruned.model))}
        contract = QuantContract(target.budgets.max_quantization_drop or 0.01)
        t0 = time.perf_counter()
        quant = onnx_accuracy_aware_int8(paths["pruned"], tmp / "quantized.onnx", calibration,
                                         [(data.x_val, data.y_val)], contract, threads=cfg["threads"],
                                         timing_x=timing_x, log=log)
        paths["quantized"] = quant.path
        log(f"quantization ({time.perf_counter() - t0:.0f}s): {quant.summary}")

        # A tight contract on the same model, and an impossible one (an accuracy floor above fp32's).
        tight = None
        try:
            t = onnx_accuracy_aware_int8(paths["pruned"], tmp / "tight.onnx", calibration, [(data.x_val, data.y_val)],
                                         QuantContract(0.002), threads=cfg["threads"], timing_x=timing_x, log=log)
            tight = {"met": True, "float_layers": t.float_layers, "float_tensors": t.float_tensors,
                     "plain_int8_drop": [f - p for f, p in zip(t.fp32_accuracy, t.plain_int8_accuracy, strict=True)],
                     "drop": t.drop, "latency_ms": t.latency_ms, "latency_cost_vs_plain_int8": t.latency_cost,
                     "summary": t.summary}
        except ContractError as exc:
            tight = {"met": False, "error": exc.problem}
        log(f"tight contract (0.002): {tight.get('summary') or tight.get('error')}")
        impossible_floor = min(1.0, quant.fp32_accuracy[0] + 0.05)
        try:
            onnx_accuracy_aware_int8(paths["pruned"], tmp / "impossible.onnx", calibration,
                                     [(data.x_val, data.y_val)], QuantContract(0.01, min_accuracy=impossible_floor))
            impossible = {"errored": False}
        except ContractError as exc:
            impossible = {"errored": True, "min_accuracy": impossible_floor, "error": exc.problem,
                          "shipped": (tmp / "impossible.onnx").exists()}
        log(f"impossible contract (min accuracy {impossible_floor:.4f}): {impossible.get('error')}")

        t0 = time.perf_counter()
        qat = qat_kd_onnx_int8(pruned.model, teacher, data, calibration, tmp / "qat.onnx",
                               QatConfig(epochs=cfg["qat_epochs"], seed=cfg["seed"]))
        qat_info = {**qat.to_dict(), "time_s": round(time.perf_counter() - t0, 1),
                    "test_accuracy_int8_qat": onnx_accuracy(qat.path, data.x_test, data.y_test, "int8")}
        qat_info.pop("path")
        qat_info.pop("history")
        log(f"QAT+KD ({qat_info['time_s']}s): val int8 accuracy {qat.val_accuracy_int8_qat:.4f} "
            f"(PTQ {qat.val_accuracy_int8_ptq:.4f}, fp32 {qat.val_accuracy_fp32_before:.4f})")

        precision = {"teacher": "fp32", "student": "fp32", "pruned": "fp32", "quantized": "int8"}
        p50 = _measure_interleaved({k: (p, precision[k]) for k, p in paths.items()}, timing_x, cfg["threads"],
                                   rounds=9, runs=100)
        models = {"teacher": teacher, "student": student, "pruned": pruned.model, "quantized": pruned.model}
        stages = []
        for name, path in paths.items():
            m = models[name]
            stages.append({"stage": name, "accuracy": onnx_accuracy(path, data.x_test, data.y_test, precision[name]),
                           "params": count_params(m), "macs": count_macs(m, data.input_shape),
                           "size_bytes": path.stat().st_size, "p50_ms": p50[name],
                           "format": "onnx", "precision": precision[name]})

    by = {s["stage"]: s for s in stages}
    macs_removed = 1 - by["pruned"]["macs"] / by["student"]["macs"]
    acc_lost = by["student"]["accuracy"] - by["pruned"]["accuracy"]
    done = {"macs_removed": macs_removed, "accuracy_points_lost": 100 * acc_lost,
            "pruned_p50_lower": by["pruned"]["p50_ms"] < by["student"]["p50_ms"],
            "passed": macs_removed >= 0.30 and acc_lost <= 0.01 and by["pruned"]["p50_ms"] < by["student"]["p50_ms"]}

    print()
    print(f"{'stage':<10} {'accuracy':>8} {'params':>9} {'MACs':>11} {'size_bytes':>11} {'p50_ms':>8}")
    for s in stages:
        print(f"{s['stage']:<10} {s['accuracy']:>8.4f} {s['params']:>9} {s['macs']:>11} {s['size_bytes']:>11} "
              f"{s['p50_ms']:>8.4f}")
    print(f"\npruning: {macs_removed:.1%} of MACs removed, {100 * acc_lost:+.2f} accuracy points lost (test), "
          f"pruned p50 {'<' if done['pruned_p50_lower'] else '>='} student p50 -> done-when "
          f"{'MET' if done['passed'] else 'NOT MET'}")
    print(f"quantized: {quant.summary}")
    print("latency: onnxruntime fp32/int8 on this host (x86_64, 1 thread, batch 1), not device latency")

    result = {
        "benchmark": "compression",
        "config": cfg,
        "choices": "Fashion-MNIST training subset and few epochs to keep the run short; teacher/student cached",
        "measured_on": "this host (onnxruntime CPU, 1 thread, batch 1, 9 interleaved rounds x 100 runs)",
        "stages": stages,
        "done_when": done,
        "pruning": pruned.to_dict(),
        "pruning_time_s": round(prune_s, 1),
        "quantization": quant.to_dict(),
        "tight_contract": tight,
        "impossible_contract": impossible,
        "qat": qat_info,
        "total_time_s": round(time.perf_counter() - t_start, 1),
    }
    result["quantization"].pop("path")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {RESULTS.relative_to(ROOT.parent)} in {result['total_time_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
