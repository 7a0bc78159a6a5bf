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
    python benchmarks/compression.py --quick --out /tmp/c.json   # 500 images, 1 epoch each: checks it runs

The ONNX int8 scheme is the one the rpi4 build would ship (``OnnxBackend.from_target``: measured on this host,
7-bit twins where this host's kernels deviate); the accuracy-aware search and QAT use it, as the build does.
The verdict (``done_when``: >= 30 % of MACs removed, <= 1 point lost, pruned p50 below the student's) is computed
from the stage rows by :func:`verdict`; a host busier than ``QUIET_LOAD`` makes it "invalid: host busy".
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
sys.path.insert(0, str(ROOT))

from _paths import shared_dataset  # noqa: E402
from _provenance import OUT_HELP, Recorder, results_path, stamped  # noqa: E402

from edgekd.backends.onnx import (  # noqa: E402
    OnnxBackend,
    export_onnx_fp32,
    onnx_accuracy_aware_int8,
    qat_kd_onnx_int8,
)
from edgekd.compress.accuracy_aware import QuantContract  # noqa: E402
from edgekd.compress.calibration import build_calibration_set  # noqa: E402
from edgekd.compress.prune import PruneConfig, prune_structured  # noqa: E402
from edgekd.compress.qat import QatConfig  # noqa: E402
from edgekd.data import load_dataset  # noqa: E402
from edgekd.distill.trainer import TrainConfig, train  # noqa: E402
from edgekd.errors import ContractError  # noqa: E402
from edgekd.io import atomic_write, write_json  # noqa: E402
from edgekd.models.budget import count_macs, count_params, fit_student_to_budget  # noqa: E402
from edgekd.models.students import build_model  # noqa: E402
from edgekd.runner import load_session  # noqa: E402
from edgekd.targets import load_target  # noqa: E402
from edgekd.timing import measure_interleaved  # noqa: E402

CONFIG = {"max_train": 12000, "seed": 0, "teacher_epochs": 3, "student_epochs": 6, "target": "rpi4",
          "prune": {"ratio": 0.4, "steps": 2, "finetune_epochs": 2}, "qat_epochs": 1, "threads": 1,
          "timing": {"rounds": 9, "runs": 100}, "max_test": None}
QUICK = {**CONFIG, "max_train": 500, "max_test": 500, "teacher_epochs": 1, "student_epochs": 1,
         "prune": {"ratio": 0.4, "steps": 1, "finetune_epochs": 1}, "timing": {"rounds": 3, "runs": 20}}
QUIET_LOAD = 2.5  # 1-minute load average: this script's two training threads plus half a core of anyone else's
ROWS = "stages"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_dataset("fashion-mnist")))
    p.add_argument("--quick", action="store_true", help="a check that the script runs: 500 images, 1 epoch each")
    p.add_argument("--cache-dir", default=str(ROOT / ".cache"), help="where teacher and student are cached")
    p.add_argument("--out", help=OUT_HELP)
    args = p.parse_args(argv)
    args.out = args.out or str(results_path("compression", args.quick))
    return args


def log(msg: str) -> None:
    print(msg, flush=True)


def cached_train(cache: Path, name: str, key: dict, build, fit) -> torch.nn.Module:
    """Train once per configuration; reuse the weights from ``cache`` afterwards."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / f"{name}-{digest}.pt"
    model = build()
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        log(f"{name}: reused from cache {path} (delete it to retrain)")
        return model.eval()
    t0 = time.perf_counter()
    model = fit(model)
    atomic_write(path, lambda tmp: torch.save(model.state_dict(), tmp))
    log(f"{name}: trained in {time.perf_counter() - t0:.0f}s, cached at {path}")
    return model.eval()


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray, precision: str) -> float:
    return float((load_session(str(path), 1, precision).run_batched(x).argmax(1) == y).mean())


def train_models(cfg: dict, data, target, cache: Path) -> tuple[torch.nn.Module, torch.nn.Module, object]:
    """The teacher and the rpi4 budget's KD student (cached per configuration)."""
    fp = data.fingerprint()
    teacher = cached_train(
        cache, "teacher", {"data": fp, "arch": "teacher_cnn", "epochs": cfg["teacher_epochs"], "seed": cfg["seed"]},
        lambda: (torch.manual_seed(cfg["seed"]), build_model("teacher_cnn", data.input_shape, data.num_classes))[1],
        lambda m: train(m, data, TrainConfig(epochs=cfg["teacher_epochs"], seed=cfg["seed"], label="teacher"),
                        progress=False).model)
    choice = fit_student_to_budget(data.input_shape, data.num_classes, target.student_budget,
                                   count_macs(teacher, data.input_shape))
    student = cached_train(
        cache, "student", {"data": fp, "choice": choice.config, "epochs": cfg["student_epochs"], "seed": cfg["seed"],
                           "teacher_epochs": cfg["teacher_epochs"]},
        lambda: (torch.manual_seed(cfg["seed"]), choice.build(data.input_shape, data.num_classes))[1],
        lambda m: train(m, data, TrainConfig(epochs=cfg["student_epochs"], seed=cfg["seed"], label="student"),
                        teacher=teacher, progress=False).model)
    log(f"student: {choice.family} {choice.config}, {choice.params} params, {choice.macs} MACs")
    return teacher, student, choice


def contract_demos(pruned: Path, tmp: Path, calibration, val, scheme: str, threads: int, timing_x, fp32_acc: float
                   ) -> tuple[dict, dict]:
    """A tight contract (0.002) on the same model, and an impossible one (an accuracy floor above fp32's)."""
    try:
        t = onnx_accuracy_aware_int8(pruned, tmp / "tight.onnx", calibration, [val], QuantContract(0.002),
                                     scheme=scheme, threads=threads, timing_x=timing_x, log=log)
        tight = {"met": True, "float_layers": t.float_layers, "float_tensors": t.float_tensors,
                 "plain_int8_drop": [f - p for f, p in zip(t.fp32_accuracy, t.plain_int8_accuracy, strict=True)],
                 "drop": t.drop, "latency_ms": t.latency_ms, "latency_cost_vs_plain_int8": t.latency_cost,
                 "summary": t.summary}
    except ContractError as exc:
        tight = {"met": False, "error": exc.problem}
    log(f"tight contract (0.002): {tight.get('summary') or tight.get('error')}")
    floor = min(1.0, fp32_acc + 0.05)
    try:
        onnx_accuracy_aware_int8(pruned, tmp / "impossible.onnx", calibration, [val],
                                 QuantContract(0.01, min_accuracy=floor), scheme=scheme)
        impossible = {"errored": False}
    except ContractError as exc:
        impossible = {"errored": True, "min_accuracy": floor, "error": exc.problem,
                      "shipped": (tmp / "impossible.onnx").exists()}
    log(f"impossible contract (min accuracy {floor:.4f}): {impossible.get('error')}")
    return tight, impossible


def verdict(stages: list[dict]) -> dict:
    """The done-when of the waterfall, from its stage rows: >= 30 % of MACs removed by pruning, <= 1 test accuracy
    point lost, and the pruned model's p50 below the student's."""
    by = {s["stage"]: s for s in stages}
    macs_removed = 1 - by["pruned"]["macs"] / by["student"]["macs"]
    acc_lost = by["student"]["accuracy"] - by["pruned"]["accuracy"]
    faster = by["pruned"]["p50_ms"] < by["student"]["p50_ms"]
    return {"macs_removed": macs_removed, "accuracy_points_lost": 100 * acc_lost, "pruned_p50_lower": faster,
            "passed": macs_removed >= 0.30 and acc_lost <= 0.01 and faster}


def print_table(stages: list[dict], done: dict, quant) -> None:
    print(f"\n{'stage':<10} {'accuracy':>8} {'params':>9} {'MACs':>11} {'size_bytes':>11} {'p50_ms':>8}")
    for s in stages:
        print(f"{s['stage']:<10} {s['accuracy']:>8.4f} {s['params']:>9} {s['macs']:>11} {s['size_bytes']:>11} "
              f"{s['p50_ms']:>8.4f}")
    print(f"\nverdict: {done}")
    print(f"quantized: {quant.summary}")
    print("latency: onnxruntime fp32/int8 on this host (x86_64, 1 thread, batch 1), not device latency")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = QUICK if args.quick else CONFIG
    recorder = Recorder(quick=args.quick, seeds=[cfg["seed"]], quiet_load=QUIET_LOAD)
    if not Path(args.data).exists():
        print(f"Fashion-MNIST not found at {args.data}: this benchmark needs it (IDX files; pass --data)",
              file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    target = load_target(cfg["target"])
    data = load_dataset(args.data, seed=cfg["seed"], max_train=cfg["max_train"])
    data = dataclasses.replace(data, x_test=data.x_test[:cfg["max_test"]], y_test=data.y_test[:cfg["max_test"]])
    log(f"data: Fashion-MNIST {len(data.y_train)}/{len(data.y_val)}/{len(data.y_test)} train/val/test "
        f"(subset of the 60k training images: max_train={cfg['max_train']}); target {target.name}")
    teacher, student, _ = train_models(cfg, data, target, Path(args.cache_dir))

    t0 = time.perf_counter()
    pc = PruneConfig(channel_multiple=target.student_budget.channel_multiple, threads=cfg["threads"],
                     seed=cfg["seed"], **cfg["prune"])
    pruned = prune_structured(student, teacher, data, pc, log=log)
    prune_s = time.perf_counter() - t0
    log(f"pruning: {pruned.summary} ({prune_s:.0f}s)")

    calibration = build_calibration_set(data, target.calibration.samples, cfg["seed"])
    timing_x, val = data.x_test[:64], (data.x_val, data.y_val)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {name: export_onnx_fp32(copy.deepcopy(m).eval(), data.x_test[:1], tmp / f"{name}.onnx")
                 for name, m in (("teacher", teacher), ("student", student), ("pruned", pruned.model))}
        # the scheme the rpi4 build ships (measured on this host; 7-bit twins where its kernels deviate)
        plain = OnnxBackend.from_target(target).export(copy.deepcopy(pruned.model).eval(), data.x_test[:1],
                                                       tmp / "plain_int8.onnx", "int8", calibration)
        scheme = plain.details["scheme"]
        log(f"int8 scheme: {scheme} ({plain.details['scheme_choice']})")
        contract = QuantContract(target.budgets.max_quantization_drop or 0.01)
        t0 = time.perf_counter()
        quant = onnx_accuracy_aware_int8(paths["pruned"], tmp / "quantized.onnx", calibration, [val], contract,
                                         scheme=scheme, threads=cfg["threads"], timing_x=timing_x, log=log)
        paths["quantized"] = quant.path
        log(f"quantization ({time.perf_counter() - t0:.0f}s): {quant.summary}")
        tight, impossible = contract_demos(paths["pruned"], tmp, calibration, val, scheme, cfg["threads"], timing_x,
                                           quant.fp32_accuracy[0])

        t0 = time.perf_counter()
        qat = qat_kd_onnx_int8(pruned.model, teacher, data, calibration, tmp / "qat.onnx",
                               QatConfig(epochs=cfg["qat_epochs"], seed=cfg["seed"], scheme=scheme))
        qat_info = {**qat.to_dict(), "time_s": round(time.perf_counter() - t0, 1),
                    "test_accuracy_int8_qat": onnx_accuracy(qat.path, data.x_test, data.y_test, "int8")}
        qat_info.pop("path")
        qat_info.pop("history")
        log(f"QAT+KD ({qat_info['time_s']}s): val int8 accuracy {qat.val_accuracy_int8_qat:.4f} "
            f"(PTQ {qat.val_accuracy_int8_ptq:.4f}, fp32 {qat.val_accuracy_fp32_before:.4f})")

        precision = {"teacher": "fp32", "student": "fp32", "pruned": "fp32", "quantized": "int8"}
        p50 = measure_interleaved({k: (p, precision[k]) for k, p in paths.items()}, timing_x, cfg["threads"],
                                  **cfg["timing"]).medians()
        models = {"teacher": teacher, "student": student, "pruned": pruned.model, "quantized": pruned.model}
        stages = [{"stage": name, "accuracy": onnx_accuracy(path, data.x_test, data.y_test, precision[name]),
                   "params": count_params(models[name]), "macs": count_macs(models[name], data.input_shape),
                   "size_bytes": path.stat().st_size, "p50_ms": p50[name], "format": "onnx",
                   "precision": precision[name], **({"scheme": scheme} if precision[name] == "int8" else {})}
                  for name, path in paths.items()]

    done = verdict(stages)
    print_table(stages, done, quant)
    quantization = quant.to_dict()
    quantization.pop("path")
    result = {
        "benchmark": "compression",
        "config": cfg,
        "choices": "Fashion-MNIST training subset and few epochs to keep the run short; teacher/student cached",
        "measured_on": f"this host (onnxruntime CPU, {cfg['threads']} thread, batch 1, {cfg['timing']['rounds']} "
                       f"interleaved rounds x {cfg['timing']['runs']} runs)",
        "int8_scheme": {k: plain.details.get(k) for k in ("scheme", "scheme_choice", "scheme_p50_ms",
                                                          "reduce_range", "kernel_deviation")},
        "stages": stages,
        "pruning": pruned.to_dict(),
        "pruning_time_s": round(prune_s, 1),
        "quantization": quantization,
        "tight_contract": tight,
        "impossible_contract": impossible,
        "qat": qat_info,
    }
    out = stamped(result, done, recorder.finish())
    write_json(args.out, out)
    print(f"wrote {args.out} in {out['provenance']['wall_s']:.0f}s (verdict: {out['verdict']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
