"""The one place tests make report.json / manifest.json content: schema-valid by construction (``edgekd.schema``).

Numbers are seeded and synthetic (timings shaped like a shared machine's: a tight body plus interrupted runs), so
tests are fast and never depend on a real build; every factory output passes ``Report.model_validate``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edgekd.schema import REPORT_SCHEMA_VERSION, Report

BLOCKS, PER_BLOCK = 5, 200
N_TEST = 400
EVAL_SHA = "e" * 64
LABELS = np.arange(N_TEST) % 10


def latency_samples(median_ms: float, seed: int, interrupted: float = 0.01, tail: float = 0.0,
                    block_drift: float = 0.0) -> list[float]:
    """Batch-1 timings as a shared machine gives them: a tight body plus a share of interrupted runs.

    ``tail``: that share of the model's own inferences is 1.6x slower (a tail-only regression). ``block_drift``:
    each timing block runs on a machine that is that much faster or slower (a noisy runner, seen block to block).
    """
    rng = np.random.default_rng(seed)
    n = BLOCKS * PER_BLOCK
    body = median_ms * rng.lognormal(0.0, 0.06, n)
    body *= np.repeat(np.exp(rng.normal(0.0, block_drift, BLOCKS)), PER_BLOCK)
    body[rng.random(n) < tail] *= 1.6
    hit = rng.random(n) < interrupted
    body[hit] += rng.uniform(1.0, 5.0, hit.sum())  # preempted: milliseconds, whatever the model
    return [round(float(v), 6) for v in body]


def predictions(accuracy: float, seed: int) -> list[int]:
    """One prediction per eval sample, right on about ``accuracy`` of them (seeded)."""
    wrong = np.random.default_rng(seed).random(N_TEST) > accuracy
    return [int((y + 1) % 10) if w else int(y) for y, w in zip(LABELS, wrong, strict=True)]


def latency(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    lat = {k: float(np.percentile(a, q)) for k, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99))}
    return {**lat, "mean": float(a.mean()), "std": float(a.std())}


def artifact_row(path: str, fmt: str = "onnx", precision: str = "int8", size: int = 195_000,
                 accuracy: float = 0.99, median_ms: float = 0.04, memory: float = 73.0, seed: int = 0,
                 interrupted: float = 0.01, shipped: bool = True, sha256: str = "0" * 64,
                 timing: dict[str, float] | None = None, **extra: Any) -> dict[str, Any]:
    samples = latency_samples(median_ms, seed, interrupted, **(timing or {}))
    lat = latency(samples)
    blocks = np.asarray(samples).reshape(BLOCKS, PER_BLOCK)
    row = {
        "path": path, "format": fmt, "precision": precision, "runtime": fmt, "runtime_version": "x",
        "sha256": sha256, "size_bytes": size, "accuracy": accuracy, "val_accuracy": accuracy,
        "agreement_with_teacher": 0.99, "latency_ms": lat, "noise_pct": 1.0, "peak_memory_mb": memory,
        "parity": {"max_abs_diff": 0.01, "top1_agreement": 1.0}, "shipped": shipped,
        "latency_ms_detail": {**lat, "runs": len(samples), "blocks": BLOCKS, "samples_ms": samples,
                              "block_medians": [float(np.median(b)) for b in blocks],
                              # as measured with the runner's --processes, each block in a process of its own
                              "processes": [{f"p{q}": float(np.percentile(b, q)) for q in (5, 50, 95)}
                                            for b in blocks]},
        "teacher_p50_ms_same_runtime": 4 * median_ms, "macs": 1_548_480, "params": 110_362,
        "speed_vs_teacher": 4.0, "speed_vs_fp32": 1.0, "predictions": predictions(accuracy, 7),
    }
    return {**row, **extra}


def make_report(seed: int = 0, slowdown: float = 1.0, on_device: bool = True, interrupted: float = 0.01,
                timing: dict[str, float] | None = None, **sections: Any) -> dict[str, Any]:
    """A report.json with the keys `edgekd build` writes: two shipped int8 artifacts with distinct values.

    ``on_device``: the host has AVX2, so it is the (generic) x86-cpu device; without it, it is not.
    """
    teacher_lat = {"p50": 0.4, "p90": 0.5, "p95": 0.6, "p99": 0.9, "mean": 0.42, "std": 0.05}
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "edgekd_version": "0.1.0",
        "target": "x86-cpu",
        "created": "2026-11-23T12:00:00+0000",
        "measured_on": {"arch": "x86_64", "cpu": "Intel(R) Xeon(R) Processor", "cores": 2, "threads": 2,
                        "cpu_flags": ["avx2"] if on_device else ["sse4_2"], "is_target_device": on_device},
        "data": {"name": "digits", "splits": {"train": 1294, "val": 144, "test": 359}},
        "eval_inputs": {"path": "eval.npz", "sha256": EVAL_SHA, "samples": N_TEST},
        "teacher": {"source": "trained-default", "arch": "teacher_cnn", "params": 1_147_722, "macs": 9_476_608,
                    "accuracy": 0.99, "size_bytes": 4_600_000, "latency_ms": teacher_lat, "peak_memory_mb": 116.0,
                    "by_format": {fmt: {"path": f"teacher_fp32.{sfx}", "runtime": fmt, "size_bytes": 4_600_000,
                                        "latency_ms": teacher_lat, "peak_memory_mb": 116.0, "accuracy": 0.99}
                                  for fmt, sfx in (("openvino", "xml"), ("onnx", "onnx"))}},
        "student": {"family": "mobilenetv2", "config": {"width": 1.0}, "params": 110_362, "macs": 1_548_480,
                    "accuracy": 0.995, "accuracy_trained_alone": None, "kd_gain": None,
                    "budget_fit": {"candidates_fitting": 10, "max_params": 1_000_000, "max_macs": 50_000_000},
                    "distillation": {"loss_weights": {"kd": 0.7, "ce": 0.3}, "temperature": 4.0, "best_epoch": 3,
                                     "epochs": 4, "teacher_time_share": 0.1}},
        "calibration": {"samples": 300},
        "artifacts": [
            artifact_row("model_int8.xml", "openvino", size=212_000, accuracy=0.985, median_ms=0.10 * slowdown,
                         memory=109.0, seed=seed + 1, interrupted=interrupted, timing=timing),
            artifact_row("model_int8.onnx", "onnx", size=195_000, accuracy=0.990, median_ms=0.04 * slowdown,
                         memory=73.0, seed=seed + 2, interrupted=interrupted, timing=timing),
            artifact_row("model_fp32.onnx", "onnx", "fp32", size=497_000, accuracy=0.995, median_ms=0.04,
                         memory=85.0, seed=seed + 3, shipped=False),
        ],
        "precision_choice": {"openvino": "int8: fastest", "onnx": "int8: fastest"},
        "gate": {"passed": True, "violations": []},
    }
    report.update(copy.deepcopy(sections))
    Report.model_validate(report)  # the factory never hands a test an invalid report by accident
    return report
